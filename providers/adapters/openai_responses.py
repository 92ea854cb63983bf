"""OpenAI's Responses API (POST /v1/responses) as the upstream wire of the openai adapter.

Some OpenAI models are served on the Responses API only (the -pro and codex
models), and a request that arrived on our /v1/responses is best carried to
OpenAI in the same API. The adapter chooses per request (OpenAIAdapter
`_uses_responses`); this module holds the pure mapping, named as
providers/adapters/base.py lists: `request_to_wire`, `result_from_wire`,
`usage_from_wire`, `StreamState`.

Choices worth knowing:
- `store: false` always: the gateway keeps conversations itself (its own
  `previous_response_id`), so the whole conversation is sent each time and a
  fallback to another provider sees the same context. Nothing stays at OpenAI.
- Chat-only parameters (`stop`, `seed`, penalties, `logit_bias`) have no
  Responses equivalent: a request with `stop` or `seed` goes over Chat
  Completions instead (OpenAIAdapter decides), route-step penalties are not sent.
- Logprobs come back in Chat Completions' shape (`{"content": [...]}`), the one
  ChatResult carries for every surface.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from providers.types import (
    ChatRequest,
    ChatResult,
    FinishReason,
    ImagePart,
    Message,
    ProviderError,
    StreamEvent,
    ToolCall,
    Usage,
)

LOGPROBS_INCLUDE = "message.output_text.logprobs"
_PASSTHROUGH = ("service_tier",)
_INCOMPLETE: dict[str, FinishReason] = {"max_output_tokens": "length", "content_filter": "content_filter"}


# -- request -----------------------------------------------------------------------


def request_to_wire(req: ChatRequest) -> dict[str, Any]:
    """The JSON body of POST /responses for this request (stream flag excluded)."""
    body: dict[str, Any] = {"model": req.model, "input": _input_to_wire(req.messages), "store": False}
    if req.tools:
        body["tools"] = [_tool_to_wire(t) for t in req.tools]
        if req.tool_choice:
            body["tool_choice"] = _tool_choice_to_wire(req.tool_choice)
        if req.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = req.parallel_tool_calls
    optional = {"temperature": req.temperature, "top_p": req.top_p, "max_output_tokens": req.max_tokens,
                "user": req.user}
    body.update({k: v for k, v in optional.items() if v is not None})
    if req.response_format:
        body["text"] = {"format": _format_to_wire(req.response_format)}
    if req.logprobs:
        body["include"] = [LOGPROBS_INCLUDE]
        if req.top_logprobs is not None:
            body["top_logprobs"] = req.top_logprobs
    if req.extra.get("reasoning_effort"):
        body["reasoning"] = {"effort": req.extra["reasoning_effort"]}
    body.update({k: req.extra[k] for k in _PASSTHROUGH if req.extra.get(k) is not None})
    if isinstance(req.extra.get("extra_body"), dict):
        body.update(req.extra["extra_body"])
    return body


def _input_to_wire(messages: list[Message]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            items.append({"type": "function_call_output", "call_id": m.tool_call_id or "", "output": m.text()})
            continue
        if m.content is not None and (m.text() or m.role != "assistant" or not m.tool_calls):
            items.append({"role": m.role, "content": _content_to_wire(m)})
        items += [{"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.arguments or "{}"}
                  for c in m.tool_calls]
    return items


def _content_to_wire(m: Message) -> str | list[dict[str, Any]]:
    if not isinstance(m.content, list) or m.role != "user":
        return m.text()
    return [{"type": "input_image", "image_url": p.url, "detail": p.detail or "auto"} if isinstance(p, ImagePart)
            else {"type": "input_text", "text": p.text} for p in m.content]


def _tool_to_wire(t) -> dict[str, Any]:
    tool: dict[str, Any] = {"type": "function", "name": t.name,
                            "parameters": t.parameters or {"type": "object", "properties": {}},
                            "strict": bool(t.strict)}  # the Responses API defaults to strict: say what we mean
    if t.description:
        tool["description"] = t.description
    return tool


def _tool_choice_to_wire(choice: str) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "name": choice}


def _format_to_wire(fmt: dict[str, Any]) -> dict[str, Any]:
    if fmt.get("type") != "json_schema":
        return {"type": fmt.get("type", "text")}
    schema = dict(fmt.get("json_schema") or {})
    return {"type": "json_schema", "name": schema.pop("name", None) or "response", **schema}


# -- response ----------------------------------------------------------------------


def result_from_wire(obj: Mapping[str, Any], request_id: str | None = None) -> ChatResult:
    """A `response` object to our ChatResult; raises on a malformed shape."""
    texts: list[str] = []
    logprobs: list[dict] = []
    calls: list[ToolCall] = []
    for item in obj["output"]:
        if item["type"] == "message":
            for part in item.get("content") or []:
                texts.append(part.get("text") or part.get("refusal") or "")
                logprobs += part.get("logprobs") or []
        elif item["type"] == "function_call":
            calls.append(ToolCall(id=item["call_id"], name=item["name"], arguments=item.get("arguments") or "{}"))
    return ChatResult(
        content="".join(texts) if texts else None,
        tool_calls=calls,
        finish_reason=finish_reason_from_wire(obj, has_tool_calls=bool(calls)),
        usage=usage_from_wire(obj.get("usage")),
        model=obj.get("model") or "",
        provider_request_id=request_id or obj.get("id"),
        logprobs={"content": logprobs, "refusal": None} if logprobs else None,
    )


def finish_reason_from_wire(obj: Mapping[str, Any], *, has_tool_calls: bool = False) -> FinishReason:
    if obj.get("status") == "incomplete":
        return _INCOMPLETE.get((obj.get("incomplete_details") or {}).get("reason") or "", "length")
    return "tool_calls" if has_tool_calls else "stop"


def usage_from_wire(u: Mapping[str, Any] | None) -> Usage:
    if not u:
        return Usage()
    return Usage(
        input_tokens=u.get("input_tokens") or 0,
        output_tokens=u.get("output_tokens") or 0,
        cached_tokens=(u.get("input_tokens_details") or {}).get("cached_tokens") or 0,
        reasoning_tokens=(u.get("output_tokens_details") or {}).get("reasoning_tokens") or 0,
    )


class StreamState:
    """Turns the Responses API's typed events into StreamEvents.

    Tool calls are numbered in the order they open (our `index`), from the
    output_index each event names; the final response's status and usage end
    the stream."""

    def __init__(self, provider: str = "openai") -> None:
        self.provider = provider
        self.calls: dict[int, int] = {}  # output_index -> our tool call index
        self.ended: StreamEvent | None = None  # done, or the error the stream reported

    def events(self, event: Mapping[str, Any]) -> Iterator[StreamEvent]:
        kind = event.get("type")
        if kind == "response.output_text.delta" and event.get("delta"):
            yield StreamEvent("delta", text=event["delta"])
        elif kind == "response.output_item.added" and event["item"].get("type") == "function_call":
            item = event["item"]
            self.calls[event["output_index"]] = len(self.calls)
            yield StreamEvent("tool_call", index=self.calls[event["output_index"]], tool_call_id=item["call_id"],
                              name=item["name"], arguments=item.get("arguments") or "")
        elif kind == "response.function_call_arguments.delta" and event.get("delta"):
            yield StreamEvent("tool_call", index=self.calls[event["output_index"]], arguments=event["delta"])
        elif kind in ("response.completed", "response.incomplete"):
            response = event["response"]
            yield StreamEvent("usage", usage=usage_from_wire(response.get("usage")))
            self.ended = StreamEvent("done", finish_reason=finish_reason_from_wire(
                response, has_tool_calls=bool(self.calls)))
        elif kind in ("error", "response.failed"):
            self.ended = self.ended or StreamEvent("error", error=self._error(event))

    def final(self) -> StreamEvent:
        if self.ended is not None:
            return self.ended
        error = ProviderError("unavailable", f"{self.provider}: stream ended before the answer finished",
                              provider=self.provider)
        return StreamEvent("error", error=error)

    def _error(self, event: Mapping[str, Any]) -> ProviderError:
        """An `error` event, or a `response.failed` with the response's error, as a ProviderError."""
        error = event if event.get("type") == "error" else (event.get("response") or {}).get("error") or {}
        code = str(error.get("code") or "")
        kind = "rate_limited" if "rate_limit" in code else "context_length" if "context" in code else "unavailable"
        message = f"{self.provider}: {error.get('message') or 'the response failed'}"
        return ProviderError(kind, message, provider=self.provider)
