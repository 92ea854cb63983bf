"""Anthropic Messages API through the official `anthropic` SDK (2.x, on httpx2).

The mapping functions (`request_to_wire`, `result_from_wire`, `error_from_sdk`,
and the `StreamState` class; names as providers/adapters/base.py lists them) are
pure so they can be tested without a network; `AnthropicAdapter` only wires them
to one long-lived AsyncAnthropic.

Choices worth knowing:
- Anthropic wants strictly alternating user/assistant turns and takes the system
  prompt apart, so system messages are lifted into `system` and consecutive
  same-role turns (including tool results, which travel in a user turn) merge.
- anthropic SDK >= 1.0 dropped `temperature`/`top_p` from `messages.create`'s
  signature; the API still accepts them on models that allow sampling options, so
  they go through `extra_body`, and only when set. The API refuses both at once,
  so when both are given only `temperature` is sent.
- `response_format` json_schema maps to Anthropic's native structured outputs
  (`output_config.format`, schema passed through the SDK's `transform_schema`);
  json_object has no native form, so it becomes an instruction in the system prompt.
- `seed` has no Anthropic equivalent and is dropped; `user` becomes metadata.user_id.
- Prompt-cache breakpoints (`cache_control` on text and image parts and tools)
  are sent as given. The system prompt stays a string unless one of its parts
  carries a breakpoint; then it is sent as text blocks, one per system message.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2

from providers.adapters.base import (
    Adapter,
    AdapterConfig,
    alternating_turns,
    connection_failure,
    upstream_limits,
)
from providers.types import (
    Capabilities,
    ChatRequest,
    ChatResult,
    ContentPart,
    FinishReason,
    ImagePart,
    Message,
    ModelListing,
    ProviderError,
    StreamEvent,
    TextPart,
    ToolCall,
    Usage,
)

log = logging.getLogger(__name__)

PROVIDER = "anthropic"
DEFAULT_MAX_TOKENS = 4096
JSON_INSTRUCTION = "Respond with a single valid JSON object and nothing else: no prose, no code fences."

FINISH_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",  # only server tools pause a turn; we send none
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Error `type` in Anthropic's envelope -> our kind. Used before the HTTP status
# because an `error` event inside a 200 stream carries only the type.
ERROR_TYPE_KINDS: dict[str, str] = {
    "rate_limit_error": "rate_limited",
    "overloaded_error": "unavailable",
    "api_error": "unavailable",
    "timeout_error": "timeout",
    "authentication_error": "auth",
    "permission_error": "auth",
    "billing_error": "auth",
    "invalid_request_error": "bad_request",
    "not_found_error": "bad_request",
    "request_too_large": "bad_request",
}

# Anthropic has no error code for these; its messages are the only signal
# ("prompt is too long: N tokens > M maximum", "input length and `max_tokens`
# exceed context limit: ...").
CONTEXT_LENGTH_MARKERS = ("prompt is too long", "context limit", "context window", "context length")


# -- request -----------------------------------------------------------------------


def request_to_wire(req: ChatRequest, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> dict[str, Any]:
    """Keyword arguments for `messages.create` (without `stream`)."""
    params: dict[str, Any] = {
        "model": req.model,
        "messages": messages_to_wire(req.conversation()),
        # Anthropic requires max_tokens; the route step may leave it to us.
        "max_tokens": req.max_tokens or default_max_tokens,
    }
    system = _system_prompt(req)
    if system:
        params["system"] = system
    if req.tools:
        params["tools"] = [_tool(t) for t in req.tools]
        choice = _tool_choice(req.tool_choice, req.parallel_tool_calls)
        if choice:
            params["tool_choice"] = choice
    if req.stop:
        params["stop_sequences"] = list(req.stop)
    output_format = _output_format(req.response_format)
    if output_format:
        params["output_config"] = {"format": output_format}
    if req.user:
        params["metadata"] = {"user_id": req.user}
    sampling = _sampling(req)
    if sampling:
        params["extra_body"] = sampling
    return params


def _system_prompt(req: ChatRequest) -> str | list[dict[str, Any]] | None:
    json_object = (req.response_format or {}).get("type") == "json_object"
    if _system_has_breakpoint(req):
        blocks = [_text_block(part) for m in req.messages if m.role == "system" for part in _text_parts(m)]
        return blocks + ([{"type": "text", "text": JSON_INSTRUCTION}] if json_object else [])
    system = req.system_prompt()
    if json_object:
        system = f"{system}\n\n{JSON_INSTRUCTION}" if system else JSON_INSTRUCTION
    return system


def _system_has_breakpoint(req: ChatRequest) -> bool:
    return any(m.role == "system" and isinstance(m.content, list) and any(p.cache_control for p in m.content)
               for m in req.messages)


def _text_parts(message: Message) -> list[TextPart]:
    if isinstance(message.content, list):
        return [p for p in message.content if isinstance(p, TextPart) and p.text]
    return [TextPart(message.content)] if message.content else []


def _text_block(part: TextPart) -> dict[str, Any]:
    return _cached({"type": "text", "text": part.text}, part.cache_control)


def _cached(block: dict[str, Any], cache_control: dict[str, Any] | None) -> dict[str, Any]:
    if cache_control:
        block["cache_control"] = dict(cache_control)
    return block


def _sampling(req: ChatRequest) -> dict[str, float]:
    # Not in the SDK's signature since 1.0 (see the module docstring); the API
    # rejects temperature and top_p together, so temperature wins.
    if req.temperature is not None:
        return {"temperature": req.temperature}
    if req.top_p is not None:
        return {"top_p": req.top_p}
    return {}


def _tool(tool) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": tool.name, "input_schema": tool.parameters or {"type": "object"}}
    if tool.description:
        spec["description"] = tool.description
    return _cached(spec, tool.cache_control)


def _tool_choice(choice: str | None, parallel: bool | None) -> dict[str, Any] | None:
    if choice in (None, "auto"):
        spec: dict[str, Any] = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}  # disable_parallel_tool_use is not allowed on "none"
    elif choice == "required":
        spec = {"type": "any"}
    else:
        spec = {"type": "tool", "name": choice}
    if parallel is False:
        spec["disable_parallel_tool_use"] = True
    elif choice is None:
        return None  # nothing asked: let Anthropic's default (auto) apply
    return spec


def _output_format(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    if not response_format or response_format.get("type") != "json_schema":
        return None
    schema = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
    try:
        # Structured outputs accept a subset of JSON Schema; the SDK's own
        # transform moves unsupported constraints into descriptions.
        schema = anthropic.transform_schema(schema)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # sent as given; the API judges it
        log.debug("transform_schema failed (%s); sending the schema unchanged", type(exc).__name__)
    return {"type": "json_schema", "schema": schema}


def messages_to_wire(conversation: list[Message]) -> list[dict[str, Any]]:
    """Our messages as Anthropic turns: roles alternate, tool results ride in user turns."""
    return alternating_turns(_turn(message) for message in conversation)


def _turn(message: Message) -> tuple[str, list[dict[str, Any]]]:
    if message.role == "tool":
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id or ""}
        if message.is_error:
            result["is_error"] = True
        if isinstance(message.content, list):
            result["content"] = _content_blocks(message.content)
        elif message.content:
            result["content"] = message.content
        return "user", [result]
    blocks = _content_blocks(message.content)
    if message.role == "assistant":
        blocks += [_tool_use(call) for call in message.tool_calls]
        return "assistant", blocks
    return "user", blocks


def _content_blocks(content: str | list[ContentPart] | None) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content:
        if isinstance(part, TextPart):
            if part.text:  # empty text blocks are a 400 at Anthropic
                blocks.append(_text_block(part))
        elif isinstance(part, ImagePart):
            blocks.append(_cached(_image_block(part), part.cache_control))
    return blocks


def _image_block(part: ImagePart) -> dict[str, Any]:
    inline = part.data_url_parts()
    if inline is not None:
        media_type, data = inline
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if part.url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": part.url}}
    raise ProviderError("bad_request", "images must be https URLs or base64 data: URLs", provider=PROVIDER)


def _tool_use(call: ToolCall) -> dict[str, Any]:
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        # Anthropic needs the input as an object; guessing would rewrite history.
        raise ProviderError(
            "bad_request",
            f"tool call {call.id!r} has arguments that are not a JSON object",
            provider=PROVIDER,
        )
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}


# -- response ----------------------------------------------------------------------


def result_from_wire(obj: Any) -> ChatResult:
    """A Messages API response (SDK `Message`) as our ChatResult."""
    try:
        blocks = list(obj.content)
        texts = [b.text for b in blocks if getattr(b, "type", None) == "text"]
        calls = [
            ToolCall(id=b.id, name=b.name, arguments=json.dumps(b.input or {}))
            for b in blocks
            if getattr(b, "type", None) == "tool_use"
        ]
        usage = usage_from_wire(obj.usage)
        stop_reason = obj.stop_reason
        model, message_id = str(obj.model), obj.id
    except (AttributeError, TypeError, ValueError) as exc:
        # The SDK builds models leniently; a body that is JSON but not a message lands here.
        raise ProviderError(
            "unavailable", f"malformed response from anthropic ({type(exc).__name__})", provider=PROVIDER
        ) from exc
    content = "".join(texts) if texts else (None if calls else "")
    return ChatResult(
        content=content,
        tool_calls=calls,
        finish_reason=finish_reason_from_wire(stop_reason, bool(calls)),
        usage=usage,
        model=model,
        provider_request_id=message_id,
    )


def finish_reason_from_wire(stop_reason: str | None, has_tool_calls: bool = False) -> FinishReason:
    if stop_reason is None:
        return "tool_calls" if has_tool_calls else "stop"
    return FINISH_REASONS.get(stop_reason, "stop")


def usage_from_wire(usage: Any, previous: Usage | None = None) -> Usage:
    """Anthropic usage -> ours. Its input_tokens excludes cache reads and writes; ours includes them.

    `previous` is the usage seen so far in a stream: message_delta may omit the
    input counts, which then carry over from message_start.
    """
    base = previous or Usage()
    fresh = _count(usage, "input_tokens")
    read = _count(usage, "cache_read_input_tokens")
    written = _count(usage, "cache_creation_input_tokens")
    if fresh is None and read is None and written is None:
        input_tokens, cached, cache_write = base.input_tokens, base.cached_tokens, base.cache_write_tokens
    else:
        cached = read if read is not None else base.cached_tokens
        cache_write = written if written is not None else base.cache_write_tokens
        input_tokens = (fresh or 0) + (cached or 0) + (cache_write or 0)
    output = _count(usage, "output_tokens")
    details = getattr(usage, "output_tokens_details", None)
    thinking = _count(details, "thinking_tokens") if details is not None else None
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output if output is not None else base.output_tokens,
        cached_tokens=cached,
        cache_write_tokens=cache_write,
        reasoning_tokens=thinking if thinking is not None else base.reasoning_tokens,
    )


def _count(obj: Any, name: str) -> int | None:
    value = getattr(obj, name, None)
    return int(value) if isinstance(value, (int, float)) else None


# -- errors ------------------------------------------------------------------------


def error_from_sdk(exc: BaseException) -> ProviderError:
    """Any failure of an SDK call as a ProviderError of the shared taxonomy."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, anthropic.APIStatusError):
        return _status_error(exc)
    failure = connection_failure(exc)
    if failure and isinstance(exc, (anthropic.APIConnectionError, httpx2.TransportError)):
        return ProviderError("unavailable", f"connection to anthropic failed: {failure}", provider=PROVIDER)
    if isinstance(exc, (anthropic.APITimeoutError, httpx2.TimeoutException)):
        return ProviderError("timeout", "anthropic did not answer in time", provider=PROVIDER)
    if isinstance(exc, (anthropic.APIConnectionError, httpx2.TransportError, httpx2.StreamError)):
        # A refused or dropped connection, including a stream cut mid-answer.
        return ProviderError(
            "unavailable", f"connection to anthropic failed ({type(exc).__name__})", provider=PROVIDER
        )
    if isinstance(exc, (anthropic.APIResponseValidationError, ValueError)):
        # Invalid JSON in a body or an SSE event (json.JSONDecodeError is a ValueError).
        return ProviderError("unavailable", "malformed response from anthropic", provider=PROVIDER)
    log.warning("unexpected error from the anthropic SDK: %s", type(exc).__name__, exc_info=exc)
    return ProviderError("unavailable", f"anthropic call failed ({type(exc).__name__})", provider=PROVIDER)


def _status_error(exc: anthropic.APIStatusError) -> ProviderError:
    status = exc.status_code
    error_type = exc.type or ""
    detail = (exc.api_message or "")[:500]
    kind = ERROR_TYPE_KINDS.get(error_type) or _kind_for_status(status)
    if kind == "bad_request" and any(m in detail.lower() for m in CONTEXT_LENGTH_MARKERS):
        kind = "context_length"
    if status == 529:
        kind = "unavailable"
    label = f"{status} {error_type}".strip() if status != 200 else error_type or "stream error"
    return ProviderError(
        kind,  # type: ignore[arg-type]
        f"anthropic {label}: {detail}" if detail else f"anthropic {label}",
        retry_after=retry_after_from_wire(exc.response.headers) if kind == "rate_limited" else None,
        status=status if status != 200 else None,
        provider=PROVIDER,
    )


def _kind_for_status(status: int) -> str:
    if status == 429:
        return "rate_limited"
    if status in (401, 403, 402):
        return "auth"
    if status in (408, 504):
        return "timeout"
    if status >= 500 or status == 200:  # 200: an `error` event with no type we know
        return "unavailable"
    return "bad_request"


def retry_after_from_wire(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` / `retry-after` (a number or an HTTP date)."""
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, KeyError):
        return None


# -- streaming ---------------------------------------------------------------------


class StreamState:
    """Turns Anthropic's raw stream events into our StreamEvents, one event at a time.

    Tool calls are numbered among tool_use blocks only (0, 1, ...), whatever their
    position among the content blocks.
    """

    def __init__(self) -> None:
        self.usage = Usage()
        self.stop_reason: str | None = None
        self.tool_index: dict[int, int] = {}  # content block index -> tool call index
        self.tool_has_arguments: dict[int, bool] = {}
        self.finished = False

    def events(self, event: Any) -> list[StreamEvent]:
        kind = getattr(event, "type", None)
        if kind == "message_start":
            self.usage = usage_from_wire(event.message.usage)
            return [StreamEvent(type="usage", usage=self.usage)]  # input is known: bill it even if cut
        if kind == "content_block_start":
            return self._block_start(event.index, event.content_block)
        if kind == "content_block_delta":
            return self._block_delta(event.index, event.delta)
        if kind == "content_block_stop":
            return self._block_stop(event.index)
        if kind == "message_delta":
            self.stop_reason = event.delta.stop_reason or self.stop_reason
            self.usage = usage_from_wire(event.usage, previous=self.usage)
            return []
        if kind == "message_stop":
            self.finished = True
            reason = finish_reason_from_wire(self.stop_reason, bool(self.tool_index))
            return [
                StreamEvent(type="usage", usage=self.usage),
                StreamEvent(type="done", finish_reason=reason),
            ]
        return []  # thinking blocks, future event types: nothing for our clients

    def _block_start(self, index: int, block: Any) -> list[StreamEvent]:
        if block.type == "text":
            return [StreamEvent(type="delta", text=block.text)] if block.text else []
        if block.type != "tool_use":
            return []
        position = self.tool_index[index] = len(self.tool_index)
        # The API streams the input as JSON pieces after an empty `input`; a
        # non-empty one here means it came whole.
        arguments = json.dumps(block.input) if block.input else ""
        self.tool_has_arguments[index] = bool(arguments)
        return [
            StreamEvent(
                type="tool_call", index=position, tool_call_id=block.id, name=block.name, arguments=arguments
            )
        ]

    def _block_delta(self, index: int, delta: Any) -> list[StreamEvent]:
        if delta.type == "text_delta" and delta.text:
            return [StreamEvent(type="delta", text=delta.text)]
        if delta.type == "input_json_delta" and delta.partial_json and index in self.tool_index:
            self.tool_has_arguments[index] = True
            return [StreamEvent(type="tool_call", index=self.tool_index[index], arguments=delta.partial_json)]
        return []

    def _block_stop(self, index: int) -> list[StreamEvent]:
        if index in self.tool_index and not self.tool_has_arguments[index]:
            # A tool without parameters streams no JSON at all; "{}" keeps the arguments valid JSON.
            self.tool_has_arguments[index] = True
            return [StreamEvent(type="tool_call", index=self.tool_index[index], arguments="{}")]
        return []


# -- adapter -----------------------------------------------------------------------


class AnthropicAdapter(Adapter):
    kind = "anthropic"
    capabilities = Capabilities(
        streaming=True,
        tools=True,
        parallel_tool_calls=True,
        images=True,
        json_mode=True,
        json_schema=True,
        system_prompt=True,
        reports_cost=False,
        notes=(
            "json_schema uses Anthropic structured outputs (output_config.format); json_object is "
            "asked for by a system-prompt instruction. temperature and top_p are exclusive "
            "(temperature wins); seed is ignored."
        ),
    )

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__(config)
        self._default_max_tokens = int(config.options.get("default_max_tokens", DEFAULT_MAX_TOKENS))
        self._client = self._make_client()

    def _make_client(self) -> anthropic.AsyncAnthropic:
        """The SDK client; a subclass (vertex_anthropic) swaps in its own, keeping the wire mapping."""
        return anthropic.AsyncAnthropic(
            api_key=self.config.credential,
            base_url=self.config.base_url or None,  # None: the SDK's default endpoint
            **self._client_transport(),
        )

    def _client_transport(self) -> dict[str, Any]:
        config = self.config
        return {
            "timeout": anthropic.Timeout(config.read_timeout, connect=config.connect_timeout),
            "max_retries": 0,  # the gateway retries, with its breaker and fallback, itself
            # The SDK follows redirects by default, and x-api-key survives a redirect
            # to another host: never follow one (docs/SECURITY.md).
            "http_client": anthropic.DefaultAsyncHttpxClient(follow_redirects=False,
                                                             limits=upstream_limits(config, httpx2.Limits)),
        }

    async def list_models(self) -> list[ModelListing]:
        try:
            page = await self._client.models.list(limit=1000)
            return [ModelListing(m.id) for m in page.data]
        except (anthropic.AnthropicError, httpx2.HTTPError, ValueError) as err:
            raise self._error(err) from None

    async def chat(self, request: ChatRequest) -> ChatResult:
        params = request_to_wire(request, self._default_max_tokens)
        try:
            message = await self._client.messages.create(**params)
        except Exception as exc:
            raise self._error(exc) from exc
        return result_from_wire(message)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        state = StreamState()
        upstream = None
        try:
            params = request_to_wire(request, self._default_max_tokens)
            upstream = await self._client.messages.create(**params, stream=True)
            async for raw in upstream:
                for event in state.events(raw):
                    yield event
                if state.finished:
                    return
            yield StreamEvent(
                type="error",
                error=ProviderError(
                    "unavailable", "anthropic stream ended before message_stop", provider=PROVIDER
                ),
            )
        except Exception as exc:  # noqa: BLE001 - a stream ends in an error event, never raises
            yield StreamEvent(type="error", error=self._error(exc))
        finally:
            # Runs on early close too (aclose/GeneratorExit): releases the HTTP
            # connection so Anthropic stops generating for a client that left.
            if upstream is not None:
                await upstream.close()

    def _error(self, exc: BaseException) -> ProviderError:
        error = error_from_sdk(exc)
        secret = self.config.credential
        if secret and secret in error.message:  # provider text never echoes the key, but be sure
            error.message = error.message.replace(secret, "***")
            error.args = (error.message,)
        return error

    async def aclose(self) -> None:
        await self._client.close()
