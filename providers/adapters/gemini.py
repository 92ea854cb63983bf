"""Google Gemini through the official `google-genai` SDK (not the retired google-generativeai).

One `genai.Client` per provider configuration, used through `client.aio`. The
pure functions `request_to_wire` / `result_from_wire` / `error_from_sdk` and the
`StreamState` class (names as providers/adapters/base.py lists them) do the
mapping and are tested without a network; the adapter only wires them to the SDK.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
import mimetypes
import re
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pydantic
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gt

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
    TextPart,
    ToolCall,
    Usage,
)

try:  # google-genai prefers httpx2 when it is installed; map both families.
    import httpx2
except ImportError:  # pragma: no cover - depends on the environment
    httpx2 = None

_HTTPX = tuple(m for m in (httpx, httpx2) if m is not None)
_TIMEOUTS = (asyncio.TimeoutError, *(m.TimeoutException for m in _HTTPX))
_TRANSPORT = tuple(m.TransportError for m in _HTTPX)
_DECODING = tuple(m.DecodingError for m in _HTTPX)

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/"

_CONTENT_FILTER = {
    "SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII",
    "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "MODEL_ARMOR",
}
# The model broke the tool protocol or the turn itself; callers should not treat it as an answer.
_ERROR_FINISH = {
    "MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS",
    "MISSING_THOUGHT_SIGNATURE", "MALFORMED_RESPONSE",
}
_TOOL_CHOICE_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY", "any": "ANY"}


def new_call_id() -> str:
    # Gemini leaves functionCall.id out for most models; our tool protocol needs one.
    return "call_" + uuid.uuid4().hex[:24]


# -- request ---------------------------------------------------------------------


def _image_part(part: ImagePart) -> gt.Part:
    inline = part.data_url_parts()
    if inline is not None:
        media_type, data = inline
        return gt.Part(inline_data=gt.Blob(mime_type=media_type, data=base64.b64decode(data)))
    # fileData needs a MIME type; the URL's extension is the only hint we have.
    media_type = mimetypes.guess_type(part.url.split("?", 1)[0])[0] or "image/jpeg"
    return gt.Part(file_data=gt.FileData(file_uri=part.url, mime_type=media_type))


def _content_parts(message: Message) -> list[gt.Part]:
    if message.content is None:
        return []
    if isinstance(message.content, str):
        return [gt.Part(text=message.content)] if message.content else []
    parts: list[gt.Part] = []
    for part in message.content:
        if isinstance(part, TextPart):
            parts.append(gt.Part(text=part.text))
        elif isinstance(part, ImagePart):
            parts.append(_image_part(part))
    return parts


def _call_args(arguments: str) -> dict[str, Any]:
    # functionCall.args is a Struct: it must be an object, so wrap anything else.
    try:
        value = json.loads(arguments) if arguments else {}
    except ValueError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def _tool_response(content: str) -> dict[str, Any]:
    # functionResponse.response is a Struct too; plain text goes under "output" as Google suggests.
    try:
        value = json.loads(content)
    except ValueError:
        return {"output": content}
    return value if isinstance(value, dict) else {"output": value}


def messages_to_wire(
    messages: list[Message], signatures: Mapping[str, bytes] | None = None
) -> list[gt.Content]:
    """The conversation (no system messages) as Gemini turns of role user / model.

    `signatures` maps tool call ids to the thought signatures Gemini attached to
    them; thinking models (Gemini 3) reject a function call sent back without its own.
    """
    signatures = signatures or {}
    contents: list[gt.Content] = []
    call_names: dict[str, str] = {}  # tool_call_id -> function name, for functionResponse
    for m in messages:
        if m.role == "assistant":
            parts = _content_parts(m)
            for call in m.tool_calls:
                call_names[call.id] = call.name
                fc = gt.FunctionCall(id=call.id or None, name=call.name, args=_call_args(call.arguments))
                parts.append(gt.Part(function_call=fc, thought_signature=signatures.get(call.id)))
            if parts:
                contents.append(gt.Content(role="model", parts=parts))
        elif m.role == "tool":
            name = call_names.get(m.tool_call_id or "") or m.name or "tool"
            fr = gt.FunctionResponse(id=m.tool_call_id or None, name=name, response=_tool_response(m.text()))
            part = gt.Part(function_response=fr)
            # Parallel calls' results belong in one user turn, in call order.
            last = contents[-1] if contents else None
            if last is not None and last.parts and all(p.function_response for p in last.parts):
                last.parts.append(part)
            else:
                contents.append(gt.Content(role="user", parts=[part]))
        elif m.role == "user":
            parts = _content_parts(m)
            if parts:
                contents.append(gt.Content(role="user", parts=parts))
    return contents


def _tools_config(req: ChatRequest) -> dict[str, Any]:
    if not req.tools:
        return {}
    declarations = [
        # parameters_json_schema takes plain JSON Schema, unlike `parameters` (OpenAPI subset).
        gt.FunctionDeclaration(
            name=t.name, description=t.description or None, parameters_json_schema=t.parameters
        )
        for t in req.tools
    ]
    out: dict[str, Any] = {"tools": [gt.Tool(function_declarations=declarations)]}
    if req.tool_choice:
        mode = _TOOL_CHOICE_MODES.get(req.tool_choice)
        fcc = (
            gt.FunctionCallingConfig(mode=mode)
            if mode
            else gt.FunctionCallingConfig(mode="ANY", allowed_function_names=[req.tool_choice])
        )
        out["tool_config"] = gt.ToolConfig(function_calling_config=fcc)
    return out


def _format_config(response_format: dict[str, Any] | None) -> dict[str, Any]:
    if not response_format:
        return {}
    kind = response_format.get("type")
    if kind == "json_object":
        return {"response_mime_type": "application/json"}
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
        return {"response_mime_type": "application/json", "response_json_schema": schema}
    return {}


def request_to_wire(
    req: ChatRequest, signatures: Mapping[str, bytes] | None = None
) -> tuple[list[gt.Content], gt.GenerateContentConfig]:
    """(contents, config) for models.generate_content / generate_content_stream."""
    fields: dict[str, Any] = {
        "system_instruction": req.system_prompt(),
        "temperature": req.temperature,
        "top_p": req.top_p,
        "max_output_tokens": req.max_tokens,
        "stop_sequences": list(req.stop) or None,
        "seed": req.seed,
        **_tools_config(req),
        **_format_config(req.response_format),
        # We pass declarations, never Python callables, and the gateway owns retries:
        # keep the SDK from running tools or silently re-requesting cut streams.
        "automatic_function_calling": gt.AutomaticFunctionCallingConfig(disable=True),
        "automatic_continuation": False,
    }
    if req.extra.get("thinking_budget") is not None:
        fields["thinking_config"] = gt.ThinkingConfig(thinking_budget=int(req.extra["thinking_budget"]))
    config = gt.GenerateContentConfig(**{k: v for k, v in fields.items() if v is not None})
    return messages_to_wire(req.conversation(), signatures), config


# -- response --------------------------------------------------------------------


def _enum_name(value: Any) -> str:
    if value is None:
        return ""
    return str(getattr(value, "value", value))


def finish_reason_from_wire(reason: Any, has_tool_calls: bool, blocked: bool = False) -> FinishReason:
    name = _enum_name(reason)
    if blocked or name in _CONTENT_FILTER:
        return "content_filter"
    if name == "MAX_TOKENS":
        return "length"
    if name in _ERROR_FINISH:
        return "error"
    return "tool_calls" if has_tool_calls else "stop"


def usage_from_wire(meta: gt.GenerateContentResponseUsageMetadata | None) -> Usage:
    if meta is None:
        return Usage()
    thoughts = meta.thoughts_token_count or 0
    return Usage(
        # toolUsePrompt tokens (server-side tools' context) are billed as input.
        input_tokens=(meta.prompt_token_count or 0) + (meta.tool_use_prompt_token_count or 0),
        # candidatesTokenCount leaves thoughts out; ours counts all completion tokens.
        output_tokens=(meta.candidates_token_count or 0) + thoughts,
        cached_tokens=meta.cached_content_token_count or 0,
        reasoning_tokens=thoughts,
    )


def _tool_call_from_wire(fc: gt.FunctionCall) -> ToolCall:
    return ToolCall(id=fc.id or new_call_id(), name=fc.name or "", arguments=json.dumps(fc.args or {}))


def _parts(response: gt.GenerateContentResponse) -> list[gt.Part]:
    candidate = response.candidates[0] if response.candidates else None
    if candidate is None or candidate.content is None:
        return []
    return candidate.content.parts or []


def _blocked(response: gt.GenerateContentResponse) -> bool:
    feedback = response.prompt_feedback
    return bool(feedback is not None and feedback.block_reason)


def result_from_wire(obj: gt.GenerateContentResponse | dict[str, Any]) -> ChatResult:
    """Our ChatResult from a GenerateContentResponse (or its wire-shaped dict)."""
    response = obj
    if not isinstance(response, gt.GenerateContentResponse):
        response = gt.GenerateContentResponse.model_validate(obj)
    texts, calls = [], []
    for part in _parts(response):
        if part.text and not part.thought:  # thought parts are summaries, not the answer
            texts.append(part.text)
        if part.function_call is not None:
            calls.append(_tool_call_from_wire(part.function_call))
    reason = response.candidates[0].finish_reason if response.candidates else None
    return ChatResult(
        content="".join(texts) if texts else None,
        tool_calls=calls,
        finish_reason=finish_reason_from_wire(reason, bool(calls), _blocked(response)),
        usage=usage_from_wire(response.usage_metadata),
        model=response.model_version or "",
        provider_request_id=response.response_id,
    )


def call_signatures(response: gt.GenerateContentResponse, calls: list[ToolCall]) -> dict[str, bytes]:
    """Thought signatures by tool call id; `calls` are the response's calls, in part order."""
    parts = [p for p in _parts(response) if p.function_call is not None]
    return {c.id: p.thought_signature for p, c in zip(parts, calls) if p.thought_signature}


class SignatureCache:
    """Recent tool call id -> thought signature, bounded.

    Our tool-call format has no field for Gemini's opaque signature, so the
    adapter keeps it to send back with the call on the next turn. Per process:
    a turn that lands on another gateway process goes without it.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._items: OrderedDict[str, bytes] = OrderedDict()

    def update(self, items: Mapping[str, bytes]) -> None:
        for key, value in items.items():
            self._items[key] = value
            self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def lookup(self, messages: list[Message]) -> dict[str, bytes]:
        ids = {c.id for m in messages for c in m.tool_calls}
        return {i: self._items[i] for i in ids if i in self._items}


# -- errors ----------------------------------------------------------------------

_KEY_PARAM = re.compile(r"([?&]key=)[^&\s'\"]+", re.IGNORECASE)
_TOKEN_LIMIT = ("exceeds the maximum number of tokens", "input token count", "context window")
_AUTH_STATUSES = {"UNAUTHENTICATED", "PERMISSION_DENIED"}
_AUTH_REASONS = {"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED", "SERVICE_DISABLED"}


def scrub(text: str, credential: str = "") -> str:
    """Remove the key from a message: it can travel as `?key=` or be echoed back."""
    text = _KEY_PARAM.sub(r"\1***", text)
    return text.replace(credential, "***") if credential else text


def _error_details(exc: genai_errors.APIError) -> list[dict[str, Any]]:
    body = exc.details if isinstance(exc.details, dict) else {}
    details = body.get("details", (body.get("error") or {}).get("details"))
    return [d for d in details or [] if isinstance(d, dict)]


def _parse_seconds(value: Any) -> float | None:
    try:
        seconds = float(str(value).strip().removesuffix("s"))
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None


def retry_after_from_wire(exc: genai_errors.APIError) -> float | None:
    """Retry-After header when the SDK kept the response, else the RetryInfo detail."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is not None and headers.get("retry-after"):
        found = _parse_seconds(headers.get("retry-after"))
        if found is not None:
            return found
    for detail in _error_details(exc):
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            return _parse_seconds(detail.get("retryDelay"))
    return None


def _api_error_kind(exc: genai_errors.APIError) -> str:
    code, status = exc.code or 0, (exc.status or "").upper()
    message = (exc.message or "").lower()
    reasons = {str(d.get("reason", "")) for d in _error_details(exc)}
    # A bad key is a 400 INVALID_ARGUMENT whose ErrorInfo reason is API_KEY_INVALID.
    if code in (401, 403) or status in _AUTH_STATUSES or reasons & _AUTH_REASONS:
        return "auth"
    if "api key not valid" in message:
        return "auth"
    if code == 429 or status == "RESOURCE_EXHAUSTED":
        return "rate_limited"
    if code in (408, 504) or status == "DEADLINE_EXCEEDED":
        return "timeout"
    if code >= 500 or status in ("UNAVAILABLE", "INTERNAL"):
        return "unavailable"
    if any(marker in message for marker in _TOKEN_LIMIT):
        return "context_length"
    return "bad_request"


def error_from_sdk(exc: BaseException, *, provider: str = "gemini", secret: str = "") -> ProviderError:
    """Any failure of a Gemini call as a ProviderError; messages never carry the key."""
    if isinstance(exc, ProviderError):
        exc.provider = exc.provider or provider
        return exc
    if isinstance(exc, genai_errors.APIError):
        kind = _api_error_kind(exc)
        text = f"Gemini {exc.code} {exc.status or ''}: {exc.message or 'no message'}"
        retry_after = retry_after_from_wire(exc) if kind in ("rate_limited", "unavailable") else None
        return ProviderError(kind, scrub(text, secret), retry_after=retry_after,  # type: ignore[arg-type]
                             status=exc.code, provider=provider)
    failure = connection_failure(exc) if isinstance(exc, _TRANSPORT) else None
    if failure:
        return ProviderError("unavailable", f"Gemini connection failed: {failure}", provider=provider)
    if isinstance(exc, _TIMEOUTS):
        return ProviderError("timeout", f"Gemini did not answer in time ({type(exc).__name__})",
                             provider=provider)
    if isinstance(exc, (*_DECODING, json.JSONDecodeError, genai_errors.UnknownApiResponseError,
                        pydantic.ValidationError)):
        # A body that is not JSON, or JSON that is not a GenerateContentResponse: worth a retry.
        return ProviderError("unavailable", f"Gemini sent a malformed reply ({type(exc).__name__})",
                             provider=provider)
    if isinstance(exc, (ValueError, TypeError)):
        # The SDK refused to build the call (e.g. a field this API does not take).
        detail = scrub(str(exc), secret)[:200]
        return ProviderError("bad_request", f"Gemini request rejected by the SDK: {detail}",
                             provider=provider)
    if isinstance(exc, _TRANSPORT):
        detail = scrub(str(exc), secret)[:200]
        return ProviderError("unavailable", f"Gemini connection failed ({type(exc).__name__}: {detail})",
                             provider=provider)
    return ProviderError("unavailable", f"Gemini call failed ({type(exc).__name__})", provider=provider)


# -- adapter ---------------------------------------------------------------------

# Responses the SDK opened for the current stream() call. An httpx response hook
# records them so closing our generator can close the connection right away,
# instead of waiting for the SDK's nested generators to be garbage collected.
_open_responses: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "gemini_open_responses", default=None
)


def _async_transport(config: AdapterConfig) -> Any:
    """httpx's own transport, of the family (httpx2 or httpx) google-genai builds its client from."""
    family = httpx2 or httpx
    return family.AsyncHTTPTransport(limits=upstream_limits(config, family.Limits))


async def _track_response(response: Any) -> None:
    bucket = _open_responses.get()
    if bucket is not None:
        bucket.append(response)


def model_listing_from_wire(model: gt.Model) -> ModelListing:
    """A models.list entry: "models/<name>", its token limits, and whether it embeds rather than chats."""
    actions = set(model.supported_actions or ())
    return ModelListing(
        (model.name or "").removeprefix("models/"),
        context_window=model.input_token_limit,
        max_output_tokens=model.output_token_limit,
        embeddings=("embedContent" in actions and "generateContent" not in actions) if actions else None,
    )


def embedding_result_from_wire(response: gt.EmbedContentResponse, request: EmbeddingRequest) -> EmbeddingResult:
    """Gemini's embeddings answer. The Gemini API reports no token counts for
    embeddings, so the input is estimated (~4 characters a token) for billing."""
    vectors = [list(e.values or []) for e in response.embeddings or []]
    if len(vectors) != len(request.inputs):
        raise ProviderError("unavailable", f"{len(vectors)} embeddings for {len(request.inputs)} inputs")
    tokens = sum(max(1, len(text) // 4) for text in request.inputs)
    return EmbeddingResult(vectors=vectors, usage=Usage(input_tokens=tokens), model=request.model)


class GeminiAdapter(Adapter):
    kind = "gemini"
    capabilities = Capabilities(
        streaming=True, tools=True, parallel_tool_calls=True, images=True,
        json_mode=True, json_schema=True, system_prompt=True, embeddings=True,
        notes="Google Gemini API via google-genai; tool call ids are generated when Gemini sends none.",
    )

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__(config)
        self._signatures = SignatureCache()
        self._client: genai.Client | None = self._make_client()

    def _make_client(self) -> genai.Client | None:
        """The SDK client, None without a key; a subclass (vertex_gemini) builds its own in Vertex mode."""
        if not self.config.credential:
            return None  # no key: every call fails as `auth`, and the SDK never reads GOOGLE_API_KEY from env
        options = self._http_options(self.config.base_url or DEFAULT_BASE_URL)
        return genai.Client(api_key=self.config.credential, vertexai=False, http_options=options)

    def _http_options(self, base_url: str | None) -> gt.HttpOptions:
        config = self.config
        return gt.HttpOptions(
            base_url=base_url,
            api_version=config.options.get("api_version"),
            # Milliseconds; httpx applies it to connect and to each read, so streams may run longer.
            timeout=max(1, int(config.read_timeout * 1000)),
            # The gateway retries with its own backoff, breaker and fallback: one attempt here.
            retry_options=gt.HttpRetryOptions(attempts=1),
            # The SDK would send X-Server-Timeout = read timeout, a server-side deadline for the
            # whole call that cuts long streams; read_timeout is ours to enforce between bytes.
            headers={"X-Server-Timeout": str(int(config.options.get("server_timeout", 600)))},
            # follow_redirects: the SDK follows them by default, and x-goog-api-key
            # survives a redirect to another host: never follow one (docs/SECURITY.md).
            # An explicit transport also keeps the SDK on httpx when aiohttp is installed
            # (the openai adapter uses it): the response hook above, which lets a closed
            # stream free its connection at once, exists only on httpx.
            async_client_args={"event_hooks": {"response": [_track_response]}, "follow_redirects": False,
                               "transport": _async_transport(config)},
        )

    def _error(self, exc: BaseException) -> ProviderError:
        return error_from_sdk(exc, provider=self.config.name or self.kind, secret=self.config.credential)

    def _aio(self):
        if self._client is None:
            raise ProviderError("auth", "no API key is configured for this Gemini provider",
                                provider=self.config.name or self.kind)
        return self._client.aio

    def _build(self, request: ChatRequest) -> tuple[list[gt.Content], gt.GenerateContentConfig]:
        try:
            return request_to_wire(request, self._signatures.lookup(request.messages))
        except (ValueError, TypeError, pydantic.ValidationError) as exc:  # e.g. a broken data: URL
            message = f"cannot express this request for Gemini ({type(exc).__name__})"
            raise ProviderError("bad_request", message, provider=self.config.name or self.kind) from None

    async def chat(self, request: ChatRequest) -> ChatResult:
        contents, config = self._build(request)
        try:
            response = await self._aio().models.generate_content(
                model=request.model, contents=contents, config=config
            )
            result = result_from_wire(response)
            self._signatures.update(call_signatures(response, result.tool_calls))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a ProviderError
            raise self._error(exc) from None  # `from None`: SDK errors hold request details
        result.model = result.model or request.model
        return result

    async def list_models(self) -> list[ModelListing]:
        try:
            pager = await self._aio().models.list(config={"page_size": 1000})
            return [model_listing_from_wire(m) async for m in pager]
        except Exception as exc:  # noqa: BLE001 - every failure becomes a ProviderError
            raise self._error(exc) from None

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        config = gt.EmbedContentConfig(output_dimensionality=request.dimensions) if request.dimensions else None
        try:
            response = await self._aio().models.embed_content(model=request.model, contents=list(request.inputs),
                                                              config=config)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a ProviderError
            raise self._error(exc) from None
        return embedding_result_from_wire(response, request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        opened: list[Any] = []  # the HTTP responses behind this stream, to close on exit
        upstream = None
        state = StreamState()
        error: ProviderError | None = None
        try:
            try:
                contents, config = self._build(request)
                upstream = await self._aio().models.generate_content_stream(
                    model=request.model, contents=contents, config=config
                )
                chunk = await _first_chunk(upstream, opened)
                while chunk is not None:
                    for event in state.events(chunk):
                        yield event
                    chunk = await anext(upstream, None)
                state.check_complete()
            except Exception as exc:  # noqa: BLE001 - every failure becomes an error event
                error = self._error(exc)
            self._signatures.update(state.signatures)
            if state.usage is not None:  # also after an error: tokens produced so far are billed
                yield StreamEvent(type="usage", usage=state.usage)
            if error is not None:
                yield StreamEvent(type="error", error=error)
            else:
                yield StreamEvent(type="done", finish_reason=state.finish_reason())
        finally:
            await _close_quietly(upstream, opened)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aio.aclose()
            self._client.close()  # the sync pool the SDK builds alongside; never used, still held


class StreamState:
    """What a stream has seen so far: tool call count, finish reason, last usage."""

    def __init__(self) -> None:
        self.calls = 0
        self.finish: Any = None
        self.blocked = False
        self.usage: Usage | None = None
        self.signatures: dict[str, bytes] = {}

    def events(self, chunk: gt.GenerateContentResponse) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for part in _parts(chunk):
            if part.text and not part.thought:
                out.append(StreamEvent(type="delta", text=part.text))
            if part.function_call is not None:
                # Gemini sends each call whole, so one event carries id, name and all arguments.
                call = _tool_call_from_wire(part.function_call)
                out.append(StreamEvent(type="tool_call", index=self.calls, tool_call_id=call.id,
                                       name=call.name, arguments=call.arguments))
                self.calls += 1
                if part.thought_signature:
                    self.signatures[call.id] = part.thought_signature
        if chunk.candidates and chunk.candidates[0].finish_reason:
            self.finish = chunk.candidates[0].finish_reason
        self.blocked = self.blocked or _blocked(chunk)
        if chunk.usage_metadata is not None:
            self.usage = usage_from_wire(chunk.usage_metadata)  # running totals: the last one wins
        return out

    def check_complete(self) -> None:
        # Gemini always ends with a finishReason; without one the answer was cut short.
        if self.finish is None and not self.blocked:
            raise ProviderError("unavailable", "Gemini stream ended before a finish reason")

    def finish_reason(self) -> FinishReason:
        return finish_reason_from_wire(self.finish, self.calls > 0, self.blocked)


async def _first_chunk(upstream: Any, opened: list[Any]) -> gt.GenerateContentResponse | None:
    """The first chunk; the SDK sends the HTTP request now, so record its response.

    The context variable is set and reset within this one await, so it never
    leaks into the consumer's context between our yields.
    """
    token = _open_responses.set(opened)
    try:
        return await anext(upstream, None)
    finally:
        _open_responses.reset(token)


async def _close_quietly(upstream: Any, opened: list[Any]) -> None:
    # Close the HTTP responses first: that is what frees the connection and tells
    # Gemini to stop generating; then let the SDK's generator unwind.
    for response in opened:
        try:
            await response.aclose()
        except Exception:  # noqa: BLE001 - already failing or closed
            pass
    if upstream is not None and hasattr(upstream, "aclose"):
        try:
            await upstream.aclose()
        except Exception:  # noqa: BLE001
            pass
