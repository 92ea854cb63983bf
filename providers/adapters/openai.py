"""OpenAI and OpenAI-compatible providers, through the official `openai` SDK.

Any server that speaks Chat Completions works by base URL: api.openai.com,
Azure OpenAI's v1 endpoint, vLLM, Ollama, OpenRouter, LiteLLM... The mapping
functions (`request_to_wire`, `result_from_wire`, `error_from_sdk`, and the
`StreamState` class; names as providers/adapters/base.py lists them) are pure so
they can be tested without a network; the adapter class only owns the client and
the control flow around the SDK calls.
"""

from __future__ import annotations

import datetime
import email.utils
import itertools
import json
import os
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx2
import openai

from providers.adapters import openai_responses
from providers.adapters.base import Adapter, AdapterConfig, connection_failure, upstream_limits
from providers.types import (
    Capabilities,
    ChatRequest,
    ChatResult,
    EmbeddingRequest,
    EmbeddingResult,
    FinishReason,
    ImagePart,
    Message,
    ModelListing,
    ProviderError,
    StreamEvent,
    ToolCall,
    Usage,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# options["responses_api"]: when to call POST /responses instead of /chat/completions.
# "native": requests that came on our /v1/responses; "always": every request
# (models served on the Responses API only); "off": never (compatible servers
# that lack it). Default: "native" on api.openai.com, "off" elsewhere.
RESPONSES_API_MODES = ("native", "always", "off")
_REQUEST_NUMBERS = itertools.count()

# Keys of ChatRequest.extra (route-step params) sent as-is; anything else is
# ignored, so a param meant for another kind never reaches this API.
_PASSTHROUGH = ("reasoning_effort", "presence_penalty", "frequency_penalty", "service_tier", "logit_bias")

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",  # the legacy functions API
    "content_filter": "content_filter",
}

_CONTEXT_CODES = {"context_length_exceeded", "string_above_max_length"}
_CONTEXT_PHRASES = ("maximum context length", "context length", "context_length_exceeded")
_FILTER_CODES = {"content_filter", "content_policy_violation"}
# Azure's filter message, and OpenAI's "flagged as potentially violating our usage policy".
_FILTER_PHRASES = ("content management policy", "potentially violating")


# -- request -----------------------------------------------------------------------


def request_to_wire(req: ChatRequest, *, max_tokens_param: str = "max_tokens") -> dict[str, Any]:
    """Keyword arguments for `chat.completions.create` (stream flags excluded).

    `max_tokens` is the default because every OpenAI-compatible server (vLLM,
    Ollama, OpenRouter, older Azure deployments) accepts it, while OpenAI's
    reasoning models (o-series, gpt-5) reject it and want `max_completion_tokens`
    instead; a provider opts into that with options={"max_tokens_param": ...}.
    """
    params: dict[str, Any] = {"model": req.model, "messages": [_message(m) for m in req.messages]}
    if req.tools:
        params["tools"] = [_tool(t) for t in req.tools]
        # OpenAI rejects tool_choice / parallel_tool_calls when no tools are sent.
        if req.tool_choice:
            params["tool_choice"] = _tool_choice(req.tool_choice)
        if req.parallel_tool_calls is not None:
            params["parallel_tool_calls"] = req.parallel_tool_calls
    optional = {"temperature": req.temperature, "top_p": req.top_p, "seed": req.seed, "user": req.user,
                max_tokens_param: req.max_tokens, "stop": list(req.stop) or None}
    params.update({k: v for k, v in optional.items() if v is not None})
    if req.response_format:
        params["response_format"] = _response_format(req.response_format)
    if req.logprobs:
        params["logprobs"] = True
        if req.top_logprobs is not None:
            params["top_logprobs"] = req.top_logprobs
    params.update({k: req.extra[k] for k in _PASSTHROUGH if req.extra.get(k) is not None})
    if isinstance(req.extra.get("extra_body"), dict):
        # Server-specific fields (vLLM's top_k, OpenRouter's provider routing...).
        params["extra_body"] = dict(req.extra["extra_body"])
    return params


def _message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.text()}
    out: dict[str, Any] = {"role": m.role}
    if m.role == "user" and isinstance(m.content, list):
        out["content"] = [_part(p) for p in m.content]  # only user turns may carry images
    elif m.role == "assistant" and m.tool_calls:
        out["content"] = m.text() or None  # null, not "", next to tool calls
        out["tool_calls"] = [_tool_call_to_wire(c) for c in m.tool_calls]
    else:
        # A plain string: compatible servers often reject part arrays for system/assistant.
        out["content"] = m.text()
    if m.name:
        out["name"] = m.name
    return out


def _part(p) -> dict[str, Any]:
    if isinstance(p, ImagePart):
        image: dict[str, Any] = {"url": p.url}  # https or data:...;base64, both accepted as-is
        if p.detail:
            image["detail"] = p.detail
        return {"type": "image_url", "image_url": image}
    return {"type": "text", "text": p.text}


def _tool_call_to_wire(c: ToolCall) -> dict[str, Any]:
    return {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments or "{}"}}


def _tool(t) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": t.name, "parameters": t.parameters or {"type": "object", "properties": {}}}
    if t.description:
        fn["description"] = t.description
    if t.strict is not None:
        fn["strict"] = t.strict
    return {"type": "function", "function": fn}


def _tool_choice(choice: str) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}  # force this one tool


def _response_format(fmt: dict[str, Any]) -> dict[str, Any]:
    if fmt.get("type") != "json_schema":
        return dict(fmt)
    schema = dict(fmt.get("json_schema") or {})
    schema.setdefault("name", "response")  # OpenAI requires a name; callers often omit it
    return {"type": "json_schema", "json_schema": schema}


# -- response ----------------------------------------------------------------------


def result_from_wire(obj: Mapping[str, Any], request_id: str | None = None) -> ChatResult:
    """A chat.completion body (the wire JSON) to our ChatResult; raises on a malformed shape.

    The adapter asks the SDK for the JSON rather than its pydantic models:
    building those models cost more CPU than the rest of the call (docs/PERFORMANCE.md).
    """
    choice = obj["choices"][0]
    message = choice["message"]
    calls = [
        ToolCall(id=c["id"], name=c["function"]["name"], arguments=c["function"].get("arguments") or "{}")
        for c in (message.get("tool_calls") or [])
        if c.get("function") is not None  # skip "custom" (free-form) tool calls
    ]
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise TypeError(f"message content is {type(content).__name__}, not text")
    if content is None and message.get("refusal"):
        content = message["refusal"]  # a structured-output refusal is the model's answer
    return ChatResult(
        content=content,
        tool_calls=calls,
        finish_reason=finish_reason_from_wire(choice.get("finish_reason"), has_tool_calls=bool(calls)),
        usage=usage_from_wire(obj.get("usage")),
        model=obj.get("model") or "",
        provider_request_id=request_id or obj.get("id"),
        logprobs=choice.get("logprobs") or None,
    )


def embedding_request_to_wire(req: EmbeddingRequest) -> dict[str, Any]:
    """The body of POST /embeddings; vectors come back as floats (the edge encodes base64 itself)."""
    body: dict[str, Any] = {"model": req.model, "input": list(req.inputs), "encoding_format": "float"}
    if req.dimensions is not None:
        body["dimensions"] = req.dimensions
    if req.user:
        body["user"] = req.user
    return body


def embedding_result_from_wire(obj: Mapping[str, Any]) -> EmbeddingResult:
    data = sorted(obj["data"], key=lambda item: item.get("index", 0))
    usage = obj.get("usage") or {}
    return EmbeddingResult(
        vectors=[[float(x) for x in item["embedding"]] for item in data],
        usage=Usage(input_tokens=usage.get("prompt_tokens") or usage.get("total_tokens") or 0),
        model=obj.get("model") or "",
    )


def finish_reason_from_wire(reason: str | None, *, has_tool_calls: bool = False) -> FinishReason:
    finish = _FINISH.get(reason or "stop", "stop")
    # Some compatible servers (older vLLM / Ollama) say "stop" next to tool calls;
    # the caller's agent loop keys on "tool_calls", so trust the calls.
    if has_tool_calls and finish == "stop":
        return "tool_calls"
    return finish


def usage_from_wire(u: Mapping[str, Any] | None) -> Usage:
    if not u:
        return Usage()
    prompt = u.get("prompt_tokens_details") or {}
    completion = u.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=u.get("prompt_tokens") or 0,
        output_tokens=u.get("completion_tokens") or 0,
        cached_tokens=prompt.get("cached_tokens") or 0,
        cache_write_tokens=prompt.get("cache_write_tokens") or 0,
        reasoning_tokens=completion.get("reasoning_tokens") or 0,
    )


class StreamState:
    """Turns chat.completion.chunk bodies (wire JSON) into StreamEvents; remembers what `done` needs."""

    def __init__(self, provider: str = "openai") -> None:
        self.provider = provider
        self.finish: str | None = None
        self.saw_tool_call = False

    def events(self, chunk: Mapping[str, Any]) -> Iterator[StreamEvent]:
        if chunk.get("usage"):
            yield StreamEvent("usage", usage=usage_from_wire(chunk["usage"]))
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta")
            if delta:
                if delta.get("content"):
                    yield StreamEvent("delta", text=delta["content"])
                for position, tc in enumerate(delta.get("tool_calls") or []):
                    yield from self._tool_call(tc, position)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]

    def _tool_call(self, tc: Mapping[str, Any], position: int) -> Iterator[StreamEvent]:
        self.saw_tool_call = True
        index = tc["index"] if tc.get("index") is not None else position
        fn = tc.get("function")
        name, args = (fn.get("name"), fn.get("arguments") or "") if fn is not None else (None, "")
        if tc.get("id") or name:  # the first piece of a call: id and name (maybe some arguments)
            yield StreamEvent("tool_call", index=index, tool_call_id=tc.get("id"), name=name, arguments=args)
        elif args:
            yield StreamEvent("tool_call", index=index, arguments=args)

    def final(self) -> StreamEvent:
        provider = self.provider
        if self.finish is None:
            # The body ended cleanly but without a finish_reason: the answer is incomplete.
            error = ProviderError("unavailable", f"{provider}: stream ended before the answer finished",
                                  provider=provider)
            return StreamEvent("error", error=error)
        finish = finish_reason_from_wire(self.finish, has_tool_calls=self.saw_tool_call)
        return StreamEvent("done", finish_reason=finish)


# -- errors ------------------------------------------------------------------------


def retry_after_from_wire(headers: Mapping[str, str] | None) -> float | None:
    """The wait the server asked for: retry-after-ms, else Retry-After (seconds or an HTTP date)."""
    if not headers:
        return None
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(ms) / 1000)
    except ValueError:
        pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC, not local time
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - time.time())


def error_from_sdk(err: BaseException, *, provider: str = "openai", secret: str = "") -> ProviderError:
    """An SDK (or decoding) exception to our taxonomy; `secret` is scrubbed from the message."""
    kind, status, retry_after, retryable = _classify(err)
    failure = _connection_failure(err)
    if failure:  # the socket's own reason, not the wrapper's guess ("Request timed out.")
        text = failure
    elif isinstance(err, openai.OpenAIError):
        text = getattr(err, "message", None) or str(err) or type(err).__name__
    elif isinstance(err, httpx2.HTTPError):  # the connection failed while a stream was being read
        text = f"connection error while reading the answer ({type(err).__name__})"
    else:  # a decode/shape failure: say so, the bare parser message is cryptic
        text = f"malformed response ({type(err).__name__}: {err})"
    if secret:
        text = text.replace(secret, "***")
    message = f"{provider}: {text}"
    return ProviderError(kind, message, status=status, retry_after=retry_after, retryable=retryable,
                         provider=provider)


def _connection_failure(err: BaseException) -> str | None:
    if isinstance(err, (openai.APIConnectionError, httpx2.TransportError)):
        return connection_failure(err)
    return None


def _classify(err: BaseException) -> tuple[str, int | None, float | None, bool | None]:
    """(kind, status, retry_after, retryable override) for one exception."""
    if _connection_failure(err):  # DNS, refused, TLS: reported as a timeout by the aiohttp transport
        return "unavailable", None, None, None
    if isinstance(err, openai.APITimeoutError):  # before APIConnectionError: it is a subclass
        return "timeout", None, None, None
    if isinstance(err, openai.APIConnectionError):
        return "unavailable", None, None, None
    if isinstance(err, httpx2.TimeoutException):
        return "timeout", None, None, None
    if isinstance(err, httpx2.HTTPError):
        return "unavailable", None, None, None
    if isinstance(err, openai.APIStatusError):
        return _classify_status(err)
    if isinstance(err, openai.APIError):
        # An error event inside a 200 stream, or a response that failed validation.
        special = _special_kind(err)
        return special or "unavailable", None, None, None
    # json.JSONDecodeError and friends: the server sent something that is not the API.
    return "unavailable", None, None, None


def _classify_status(err: openai.APIStatusError) -> tuple[str, int | None, float | None, bool | None]:
    status = err.status_code
    if status == 429:
        # insufficient_quota is a 429 that waiting will not fix: billing has to.
        retryable = False if err.code == "insufficient_quota" else None
        return "rate_limited", status, retry_after_from_wire(err.response.headers), retryable
    if status in (401, 403):
        return "auth", status, None, None
    if status == 408:
        return "timeout", status, None, None
    if status >= 500 or status == 409:  # 409: OpenAI's own SDK retries a lock conflict
        return "unavailable", status, retry_after_from_wire(err.response.headers), None
    return _special_kind(err) or "bad_request", status, None, None


def _special_kind(err: openai.APIError) -> str | None:
    """context_length / content_filter, recognised by code first, then by message."""
    code = (err.code or "").lower()
    message = (err.message or "").lower()
    if code in _CONTEXT_CODES or any(p in message for p in _CONTEXT_PHRASES):
        return "context_length"
    if code in _FILTER_CODES or any(p in message for p in _FILTER_PHRASES):
        return "content_filter"
    return None


# -- the adapter -------------------------------------------------------------------


class OpenAIAdapter(Adapter):
    kind = "openai"
    capabilities = Capabilities(
        streaming=True, tools=True, parallel_tool_calls=True, images=True, json_mode=True, json_schema=True,
        embeddings=True, token_inputs=True, logprobs=True, strict_tools=True,
        notes="OpenAI or any OpenAI-compatible endpoint; what a given model supports depends on the server.",
    )

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__(config)
        opts = config.options
        self._max_tokens_param = opts.get("max_tokens_param", "max_tokens")
        on_openai = (config.base_url or DEFAULT_BASE_URL).rstrip("/") == DEFAULT_BASE_URL
        mode = opts.get("responses_api")  # the provider form refuses other values
        self._responses_api = mode if mode in RESPONSES_API_MODES else ("native" if on_openai else "off")
        self._client = self._make_client()
        # The SDK falls back to OPENAI_ORG_ID / OPENAI_PROJECT_ID from the process
        # env; a gateway must send only what this provider was configured with.
        self._client.organization = opts.get("organization")
        self._client.project = opts.get("project")

    def _make_client(self) -> openai.AsyncOpenAI:
        """The SDK client; a subclass (azure_openai) swaps in its own, keeping the wire mapping."""
        config, opts = self.config, self.config.options
        return openai.AsyncOpenAI(
            # Keyless local servers (Ollama, vLLM) still need a non-empty key for the
            # SDK; an explicit placeholder also stops it reading OPENAI_API_KEY.
            api_key=config.credential or "no-key",
            base_url=config.base_url or DEFAULT_BASE_URL,
            default_headers=opts.get("default_headers"),  # e.g. OpenRouter's X-Title
            default_query=opts.get("default_query"),
            **self._client_transport(),
        )

    def _client_transport(self) -> dict[str, Any]:
        config = self.config
        return {
            "timeout": openai.Timeout(config.read_timeout, connect=config.connect_timeout),
            "max_retries": 0,  # the pipeline retries, with backoff, breaker and fallback
            # The SDK follows redirects by default, re-sending the prompt (and any
            # custom key header) wherever the provider points: never (docs/SECURITY.md).
            # aiohttp under the SDK (its `openai[aiohttp]` option): 0.72 ms of CPU
            # per call instead of 0.89 on httpx, 2.3 ms per 20-chunk stream instead of 2.8.
            "http_client": openai.DefaultAioHttpClient(follow_redirects=False,
                                                       limits=upstream_limits(config, httpx2.Limits)),
        }

    def _error(self, err: BaseException) -> ProviderError:
        return error_from_sdk(err, provider=self.config.name or self.kind, secret=self.config.credential)

    def _body(self, request: ChatRequest, **stream: Any) -> dict[str, Any]:
        """The JSON body: what `chat.completions.create` would send for these arguments."""
        params = request_to_wire(request, max_tokens_param=self._max_tokens_param)
        extra_body = params.pop("extra_body", None)
        return params | stream | (extra_body or {})

    def _uses_responses(self, request: ChatRequest) -> bool:
        """Whether this request goes to POST /responses (see RESPONSES_API_MODES).
        `stop` and `seed` exist on Chat Completions only, so such a request stays there."""
        if request.stop or request.seed is not None:
            return False
        return self._responses_api == "always" or (self._responses_api == "native" and request.api == "responses")

    @staticmethod
    def _options() -> dict[str, Any]:
        # The SDK makes a uuid4 idempotency key for every POST when given none
        # (3% of a request's CPU), and sends it only to APIs that take one
        # (OpenAI's does not): a process-unique counter serves it as well.
        return {"idempotency_key": f"ep-{os.getpid()}-{next(_REQUEST_NUMBERS)}"}

    async def chat(self, request: ChatRequest) -> ChatResult:
        if self._uses_responses(request):
            return await self._respond(request)
        # client.post, the SDK's call for a raw body (its README's "undocumented
        # requests"): same auth, base URL, headers, timeouts and status errors as
        # chat.completions.create, without its TypedDict transform of the request
        # and pydantic models of the reply, which cost 0.3 ms of CPU a call.
        try:
            response = await self._client.post("/chat/completions", body=self._body(request),
                                               cast_to=httpx2.Response, options=self._options())
            body = json.loads(response.content)
            # Non-JSON or wrongly shaped bodies surface here as ValueError / KeyError...
            return result_from_wire(body, response.headers.get("x-request-id"))
        except (openai.OpenAIError, httpx2.HTTPError, ValueError, AttributeError, TypeError, IndexError,
                KeyError) as err:
            raise self._error(err) from None

    async def _respond(self, request: ChatRequest) -> ChatResult:
        try:
            response = await self._client.post("/responses", body=openai_responses.request_to_wire(request),
                                               cast_to=httpx2.Response, options=self._options())
            body = json.loads(response.content)
            return openai_responses.result_from_wire(body, response.headers.get("x-request-id"))
        except (openai.OpenAIError, httpx2.HTTPError, ValueError, AttributeError, TypeError, IndexError,
                KeyError) as err:
            raise self._error(err) from None

    async def list_models(self) -> list[ModelListing]:
        try:
            response = await self._client.get("/models", cast_to=httpx2.Response)
            data = json.loads(response.content)["data"]
            return [ModelListing(m["id"], embeddings=True if "embedding" in m["id"] else None) for m in data]
        except (openai.OpenAIError, httpx2.HTTPError, ValueError, TypeError, KeyError) as err:
            raise self._error(err) from None

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        try:
            response = await self._client.post("/embeddings", body=embedding_request_to_wire(request),
                                               cast_to=httpx2.Response, options=self._options())
            return embedding_result_from_wire(json.loads(response.content))
        except (openai.OpenAIError, httpx2.HTTPError, ValueError, AttributeError, TypeError, IndexError,
                KeyError) as err:
            raise self._error(err) from None

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        name = self.config.name or self.kind
        if self._uses_responses(request):
            path, body = "/responses", openai_responses.request_to_wire(request) | {"stream": True}
            state: StreamState | openai_responses.StreamState = openai_responses.StreamState(name)
        else:
            path, body = "/chat/completions", self._body(request, stream=True, stream_options={"include_usage": True})
            state = StreamState(name)
        sdk_stream = None
        try:
            # The SDK still parses the SSE and raises on an error event; chunks come as
            # the parsed JSON. `object`, not `dict`: the SDK then hands each chunk over
            # as it is, where for `dict` it rebuilt every nested value (~8% of a stream's CPU).
            sdk_stream = await self._client.post(path, body=body, cast_to=object, stream=True,
                                                 stream_cls=openai.AsyncStream[object], options=self._options())
            async for chunk in sdk_stream:
                for event in state.events(chunk):
                    yield event
            yield state.final()
        except (openai.OpenAIError, httpx2.HTTPError, ValueError, AttributeError, TypeError, IndexError,
                KeyError) as err:
            yield StreamEvent("error", error=self._error(err))
        finally:
            # Runs on normal end, on error and on aclose() by a departed client:
            # closing the SDK stream closes the HTTP response and frees the connection.
            if sdk_stream is not None:
                await sdk_stream.close()

    async def aclose(self) -> None:
        await self._client.close()
