"""ExecutionPlatformClient: the small Python client Hive imports.

    from ep_client import ExecutionPlatformClient

    client = ExecutionPlatformClient(base_url="http://localhost:8000", persona="architect")
    response = client.chat("Design a system")
    print(response)                       # the answer text
    response.cost_usd, response.provider  # what it cost, who served it

Standalone on purpose: the package `execution-platform-client` (clients/python/
in the platform's repository, `pip install ./clients/python`) imports only the
standard library and httpx, never Django or anything else of the server, so
Hive installs it without the platform. It speaks the platform's
OpenAI-compatible endpoint, POST /v1/chat/completions.

- The API key comes from `api_key=` or the EP_API_KEY environment variable.
- Persona per client or per call; `provider=`/`model=` (or the seed's
  `provider_override=`) calls a provider directly, as "provider/model"
  (the key needs the `direct` scope).
- `run_id` per client and `step` per call tag requests as one workflow run
  (headers X-EP-Run-Id / X-EP-Step); see GET /api/v1/runs/{run_id}.
- Connection failures are retried with a small backoff; HTTP errors are not
  retried and raise the typed exceptions below, mirroring the error codes.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Self

import httpx

__all__ = [
    "APIConnectionError", "AsyncExecutionPlatformClient", "AuthenticationError", "BudgetExceededError",
    "ChatResponse", "ExecutionPlatformClient", "ExecutionPlatformError", "InvalidRequestError", "NotFoundError",
    "PermissionDeniedError", "RateLimitError", "StreamEvent", "ToolCall", "UpstreamError", "Usage", "error_from_body",
    "new_run_id",
]

DEFAULT_BASE_URL = "http://localhost:8000"
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=5.0)
# Failures where the request cannot have been served, or (a stale pooled
# connection closed under us) almost certainly was not: safe to send again.
# A read timeout is not here: the provider may already be billing that call.
RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


def new_run_id() -> str:
    return "run_" + uuid.uuid4().hex[:16]


# -- errors -----------------------------------------------------------------------------


class ExecutionPlatformError(Exception):
    """Anything the platform refused or failed at; `code` is the envelope's code."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "", request_id: str | None = None,
                 type: str = "") -> None:
        super().__init__(message)
        self.message, self.status, self.code, self.request_id, self.type = message, status, code, request_id, type

    def __str__(self) -> str:
        where = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.code or 'error'}: {self.message}{where}"


class APIConnectionError(ExecutionPlatformError):
    """The platform could not be reached (after the retries)."""


class AuthenticationError(ExecutionPlatformError):
    """401: missing, wrong, revoked or expired API key."""


class PermissionDeniedError(ExecutionPlatformError):
    """403: the key may not do this (e.g. a direct provider/model without the `direct` scope)."""


class NotFoundError(ExecutionPlatformError):
    """404: unknown persona (the message lists the known ones), provider/model or run."""


class RateLimitError(ExecutionPlatformError):
    """429: slow down; `retry_after` (seconds) comes from the Retry-After header."""

    def __init__(self, message: str, *, retry_after: float | None = None, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.retry_after = retry_after


class BudgetExceededError(ExecutionPlatformError):
    """A budget has no room for this call. Not a RateLimitError: waiting a few
    seconds does not help, so retry loops written for 429s must not catch it."""


class InvalidRequestError(ExecutionPlatformError):
    """4xx: the request itself is wrong (bad parameter, too large, context too long)."""


class UpstreamError(ExecutionPlatformError):
    """5xx, or a stream cut by its provider: the platform or its providers failed."""


def _error_class(status: int | None, code: str) -> type[ExecutionPlatformError]:
    if code == "budget_exceeded":
        return BudgetExceededError
    by_status = {401: AuthenticationError, 403: PermissionDeniedError, 404: NotFoundError, 429: RateLimitError}
    if status in by_status:
        return by_status[status]
    if code in ("rate_limited", "provider_rate_limited"):
        return RateLimitError
    if status is None or status >= 500:
        return UpstreamError  # no status: an error sent inside a 200 stream
    return InvalidRequestError if status >= 400 else ExecutionPlatformError


def error_from_body(status: int | None, body: Any, headers: httpx.Headers | dict | None = None) -> ExecutionPlatformError:
    """The typed exception for one error envelope {"error": {type, code, message, request_id}}."""
    headers = httpx.Headers(headers or {})
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"message": str(body)[:500] if body else f"HTTP {status}"}
    code = str(error.get("code") or (f"http_{status}" if status else "error"))
    fields = {"status": status, "code": code, "type": str(error.get("type") or ""),
              "request_id": error.get("request_id") or headers.get("x-request-id")}
    cls = _error_class(status, code)
    message = str(error.get("message") or code)
    if cls is RateLimitError:
        return RateLimitError(message, retry_after=_seconds(headers.get("retry-after")), **fields)
    return cls(message, **fields)


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:  # an HTTP date: rare from us; treat as "unknown"
        return None


def _raise_for_response(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = response.text
    raise error_from_body(response.status_code, body, response.headers)


# -- results ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it

    def parsed_arguments(self) -> Any:
        return json.loads(self.arguments or "{}")


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @classmethod
    def from_openai(cls, data: dict | None) -> Usage:
        data = data or {}
        return cls(
            input_tokens=data.get("prompt_tokens") or 0,
            output_tokens=data.get("completion_tokens") or 0,
            total_tokens=data.get("total_tokens") or 0,
            cached_tokens=(data.get("prompt_tokens_details") or {}).get("cached_tokens") or 0,
            reasoning_tokens=(data.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0,
        )


@dataclass(frozen=True, slots=True)
class ChatResponse:
    """One answer. str(response) is its text, so `print(response)` shows the answer."""

    text: str
    tool_calls: list[ToolCall]
    finish_reason: str | None
    usage: Usage
    cost_usd: Decimal | None
    provider: str
    model: str
    persona: str
    request_id: str
    raw: dict = field(repr=False, default_factory=dict)

    def __str__(self) -> str:
        return self.text

    @property
    def message(self) -> dict:
        """The assistant message to append to the conversation (tool calls included)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text or None}
        if self.tool_calls:
            message["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name,
                                      "arguments": c.arguments}} for c in self.tool_calls]
        return message


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """delta (text) | tool_call (a piece: id and name come first, arguments in pieces,
    matched by `index`) | usage | done (finish_reason, usage and who served it)."""

    type: str
    text: str = ""
    index: int | None = None
    tool_call_id: str | None = None
    name: str | None = None
    arguments: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None
    provider: str = ""
    model: str = ""
    request_id: str = ""


def response_from(body: dict, headers: httpx.Headers) -> ChatResponse:
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    calls = [ToolCall(c["id"], c["function"]["name"], c["function"].get("arguments") or "")
             for c in message.get("tool_calls") or []]
    cost = headers.get("x-ep-cost-usd")
    return ChatResponse(
        text=message.get("content") or "",
        tool_calls=calls,
        finish_reason=choice.get("finish_reason"),
        usage=Usage.from_openai(body.get("usage")),
        cost_usd=Decimal(cost) if cost else None,
        provider=headers.get("x-ep-provider", ""),
        model=headers.get("x-ep-model") or body.get("model", ""),
        persona=headers.get("x-ep-persona", ""),
        request_id=headers.get("x-request-id", ""),
        raw=body,
    )


class StreamParser:
    """OpenAI chat.completion.chunk SSE lines -> StreamEvents."""

    def __init__(self, headers: httpx.Headers) -> None:
        self.headers = headers
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.done = False

    def feed(self, line: str) -> list[StreamEvent]:
        if not line.startswith("data:"):
            return []  # blank separators, comments, keep-alives
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            h = self.headers
            return [StreamEvent("done", finish_reason=self.finish_reason, usage=self.usage, provider=h.get(
                "x-ep-provider", ""), model=h.get("x-ep-model", ""), request_id=h.get("x-request-id", ""))]
        chunk = json.loads(data)
        if "error" in chunk:
            raise error_from_body(None, chunk, self.headers)
        events = [event for choice in chunk.get("choices") or [] for event in self._choice(choice)]
        if chunk.get("usage"):
            self.usage = Usage.from_openai(chunk["usage"])
            events.append(StreamEvent("usage", usage=self.usage))
        return events

    def _choice(self, choice: dict) -> list[StreamEvent]:
        delta = choice.get("delta") or {}
        events = [StreamEvent("delta", text=delta["content"])] if delta.get("content") else []
        for piece in delta.get("tool_calls") or []:
            function = piece.get("function") or {}
            events.append(StreamEvent("tool_call", index=piece.get("index"), tool_call_id=piece.get("id"),
                                      name=function.get("name"), arguments=function.get("arguments") or ""))
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        return events

    def check_complete(self) -> None:
        if not self.done:  # the connection ended without [DONE] and without an error chunk
            raise UpstreamError("The stream ended before it was complete.", code="stream_incomplete",
                                request_id=self.headers.get("x-request-id"))


# -- the request, shared by both clients -----------------------------------------------------

# chat()/stream() keywords that are ours; every other keyword is an OpenAI
# parameter (temperature, max_tokens, tool_choice, response_format, ...).
CALL_OPTIONS = ("persona", "provider", "model", "step", "run_id", "system")


@dataclass
class _Settings:
    base_url: str
    api_key: str
    persona: str | None
    provider: str | None
    model: str | None
    run_id: str | None
    max_retries: int
    backoff: float


def _messages(prompt_or_messages: str | list[dict], system: str | None) -> list[dict]:
    if isinstance(prompt_or_messages, str):
        messages = [{"role": "user", "content": prompt_or_messages}]
    else:
        messages = list(prompt_or_messages)
    return ([{"role": "system", "content": system}] if system else []) + messages


def _tools(tools: list[dict] | None) -> list[dict] | None:
    # Accept OpenAI's {"type": "function", "function": {...}} or the bare {"name", "parameters"}.
    return [t if "function" in t else {"type": "function", "function": t} for t in tools] if tools else None


def _target(settings: _Settings, persona: str | None, provider: str | None, model: str | None) -> tuple[str, bool]:
    """The `model` field: a persona slug or "provider/model"; the flag says it is
    a bare provider whose model must first be looked up in GET /v1/models."""
    provider = provider or (None if persona else settings.provider)
    model = model or (None if persona else settings.model)
    if provider and "/" in provider:
        return provider, False
    if model and "/" in model:
        return model, False
    if provider:
        return (f"{provider}/{model}", False) if model else (provider, True)
    if model:
        raise ValueError(f"model '{model}' needs a provider: pass provider=... or model='provider/{model}'.")
    persona = persona or settings.persona
    if not persona:
        raise ValueError("Name a persona (persona='architect') or a provider and model.")
    return persona, False


def _first_model(body: dict, provider: str) -> str:
    ids = [m["id"] for m in body.get("data") or [] if str(m.get("id", "")).startswith(provider + "/")]
    if not ids:
        raise NotFoundError(
            f"No model of provider '{provider}' is callable with this key (direct calls need the 'direct' "
            "scope); pass model=... or use a persona.", code="model_not_found")
    return ids[0]


def _connection_error(error: Exception) -> APIConnectionError:
    return APIConnectionError(f"Could not reach the Execution Platform: {error!r}", code="connection_error")


class _ClientBase:
    _http: httpx.Client | httpx.AsyncClient

    def __init__(self, base_url: str | None = None, persona: str | None = None, *, api_key: str | None = None,
                 provider: str | None = None, model: str | None = None, provider_override: str | None = None,
                 run_id: str | None = None, max_retries: int = 2, backoff: float = 0.25) -> None:
        api_key = api_key or os.environ.get("EP_API_KEY", "")
        if not api_key:
            raise AuthenticationError("No API key: pass api_key=... or set EP_API_KEY.", code="missing_api_key")
        base = (base_url or os.environ.get("EP_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        base = base.removesuffix("/v1")  # accept an OpenAI-style base URL too
        self.settings = _Settings(base, api_key, persona, provider or provider_override, model, run_id,
                                  max_retries, backoff)
        self._provider_models: dict[str, str] = {}  # bare provider -> its model, looked up once

    persona = property(lambda self: self.settings.persona, lambda self, v: setattr(self.settings, "persona", v))
    run_id = property(lambda self: self.settings.run_id, lambda self, v: setattr(self.settings, "run_id", v))

    def _headers(self, run_id: str | None = None, step: str | int | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.settings.api_key}", "User-Agent": "ep-client/1"}
        if run_id or self.settings.run_id:
            headers["X-EP-Run-Id"] = str(run_id or self.settings.run_id)
        if step is not None and step != "":
            headers["X-EP-Step"] = str(step)
        return headers

    def _request(self, model: str, prompt_or_messages, tools, params: dict, stream: bool) -> httpx.Request:
        if params.pop("stream", False) and not stream:
            raise ValueError("chat() returns one answer; use stream() for events.")
        ours = {name: params.pop(name, None) for name in CALL_OPTIONS}
        body = {"model": model, "messages": _messages(prompt_or_messages, ours["system"]), **params}
        if tools:
            body["tools"] = _tools(tools)
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        return self._http.build_request("POST", "/v1/chat/completions", json=body,
                                        headers=self._headers(ours["run_id"], ours["step"]))

    def _target(self, params: dict) -> tuple[str, bool]:
        return _target(self.settings, params.get("persona"), params.get("provider"), params.get("model"))

    def _backoff(self, attempt: int) -> float:
        return self.settings.backoff * (2**attempt) * (0.5 + random.random())


class ExecutionPlatformClient(_ClientBase):
    """Synchronous client; one per process (it pools connections), close() when done.

    chat()/stream() take, besides OpenAI's parameters: persona=, provider=, model=
    (override the client's), step= (this call's workflow step), run_id=, system=.
    """

    def __init__(self, base_url: str | None = None, persona: str | None = None, *,
                 timeout: httpx.Timeout | float = DEFAULT_TIMEOUT, transport: httpx.BaseTransport | None = None,
                 **options: Any) -> None:
        super().__init__(base_url, persona, **options)
        self._http = httpx.Client(base_url=self.settings.base_url, timeout=timeout, transport=transport)

    def chat(self, prompt_or_messages: str | list[dict], tools: list[dict] | None = None, **params: Any) -> ChatResponse:
        request = self._request(self._model(params), prompt_or_messages, tools, params, stream=False)
        response = self._send(request)
        return response_from(response.json(), response.headers)

    def stream(self, prompt_or_messages: str | list[dict], tools: list[dict] | None = None,
               **params: Any) -> Iterator[StreamEvent]:
        """StreamEvents as they arrive; an error sent inside the stream raises."""
        request = self._request(self._model(params), prompt_or_messages, tools, params, stream=True)
        response = self._send(request, stream=True)
        try:
            parser = StreamParser(response.headers)
            for line in response.iter_lines():
                yield from parser.feed(line)
            parser.check_complete()
        except httpx.HTTPError as error:
            raise _connection_error(error) from error
        finally:
            response.close()

    def _model(self, params: dict) -> str:
        target, lookup = self._target(params)
        if lookup and target not in self._provider_models:
            listing = self._send(self._http.build_request("GET", "/v1/models", headers=self._headers()))
            self._provider_models[target] = _first_model(listing.json(), target)
        return self._provider_models[target] if lookup else target

    def _send(self, request: httpx.Request, stream: bool = False) -> httpx.Response:
        for attempt in range(self.settings.max_retries + 1):
            try:
                response = self._http.send(request, stream=stream)
                break
            except RETRYABLE as error:
                if attempt == self.settings.max_retries:
                    raise _connection_error(error) from error
                time.sleep(self._backoff(attempt))
            except httpx.HTTPError as error:
                raise _connection_error(error) from error
        if response.status_code >= 400 and stream:
            response.read()
            response.close()
        _raise_for_response(response)
        return response

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncExecutionPlatformClient(_ClientBase):
    """The same for asyncio: `await client.chat(...)`, `async for event in client.stream(...)`."""

    def __init__(self, base_url: str | None = None, persona: str | None = None, *,
                 timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
                 transport: httpx.AsyncBaseTransport | None = None, **options: Any) -> None:
        super().__init__(base_url, persona, **options)
        self._http = httpx.AsyncClient(base_url=self.settings.base_url, timeout=timeout, transport=transport)

    async def chat(self, prompt_or_messages: str | list[dict], tools: list[dict] | None = None,
                   **params: Any) -> ChatResponse:
        request = self._request(await self._model(params), prompt_or_messages, tools, params, stream=False)
        response = await self._send(request)
        return response_from(response.json(), response.headers)

    async def stream(self, prompt_or_messages: str | list[dict], tools: list[dict] | None = None,
                     **params: Any) -> AsyncIterator[StreamEvent]:
        request = self._request(await self._model(params), prompt_or_messages, tools, params, stream=True)
        response = await self._send(request, stream=True)
        try:
            parser = StreamParser(response.headers)
            async for line in response.aiter_lines():
                for event in parser.feed(line):
                    yield event
            parser.check_complete()
        except httpx.HTTPError as error:
            raise _connection_error(error) from error
        finally:
            await response.aclose()

    async def _model(self, params: dict) -> str:
        target, lookup = self._target(params)
        if lookup and target not in self._provider_models:
            listing = await self._send(self._http.build_request("GET", "/v1/models", headers=self._headers()))
            self._provider_models[target] = _first_model(listing.json(), target)
        return self._provider_models[target] if lookup else target

    async def _send(self, request: httpx.Request, stream: bool = False) -> httpx.Response:
        for attempt in range(self.settings.max_retries + 1):
            try:
                response = await self._http.send(request, stream=stream)
                break
            except RETRYABLE as error:
                if attempt == self.settings.max_retries:
                    raise _connection_error(error) from error
                await asyncio.sleep(self._backoff(attempt))
            except httpx.HTTPError as error:
                raise _connection_error(error) from error
        if response.status_code >= 400 and stream:
            await response.aread()
            await response.aclose()
        _raise_for_response(response)
        return response

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
