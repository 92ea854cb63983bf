"""AWS Bedrock through `aiobotocore`: the Converse and ConverseStream APIs.

Why aiobotocore and not the anthropic SDK's `AsyncAnthropicBedrock`: Converse is
Bedrock's one request shape for every model it hosts (Claude, Llama, Mistral,
Nova, Cohere...), while AnthropicBedrock speaks only Claude's InvokeModel body.
aiobotocore is botocore (the AWS SDK's own SigV4 signing, credential chain,
rest-json parsing and binary event-stream decoding) on aiohttp, so calls never
block the event loop, which boto3 would.

The pure mapping (`request_to_wire`, `messages_to_wire`, `result_from_wire`,
`finish_reason_from_wire`, `usage_from_wire`, `StreamState`, `error_from_sdk`;
names as providers/adapters/base.py lists them) is tested without a network;
`BedrockAdapter` owns one long-lived client per provider configuration.

Choices worth knowing:
- Converse wants alternating user/assistant turns, the system prompt apart, tool
  results as `toolResult` blocks in a user turn: consecutive same-role turns merge.
- Images only as bytes (png, jpeg, gif, webp): a data: URL works, an https URL is
  a bad request (Bedrock fetches no URLs).
- `json_schema` is Converse's `outputConfig.textFormat`; `json_object` has no
  native form and is asked for in the system prompt; `seed` has no equivalent.
- Usage: Bedrock's `inputTokens` leaves cache reads and writes out; ours counts them.
- Credentials: static keys, the host's role, or a role assumed with either
  (providers/adapters/aws_auth.py). Region from options `region`; base_url
  overrides the Bedrock endpoint, options `sts_endpoint_url` the STS one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
from aiobotocore.session import AioSession
from botocore import eventstream
from botocore import exceptions as boto_errors
from botocore.parsers import ResponseParserError

from providers.adapters.aws_auth import SERVICE, AssumedRole, client_kwargs
from providers.adapters.base import Adapter, AdapterConfig, alternating_turns, connection_failure
from providers.adapters.cloud_credentials import aws_keys
from providers.types import (
    Capabilities,
    ChatRequest,
    ChatResult,
    ContentPart,
    FinishReason,
    ImagePart,
    Message,
    ProviderError,
    StreamEvent,
    TextPart,
    ToolCall,
    Usage,
)

log = logging.getLogger(__name__)

JSON_INSTRUCTION = "Respond with a single valid JSON object and nothing else: no prose, no code fences."
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif",
                 "image/webp": "webp"}

FINISH_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    "malformed_model_output": "error",
    "malformed_tool_use": "error",
}

# Error codes (HTTP errors say them in x-amzn-ErrorType; stream exceptions in
# lowerCamel, normalised below) -> (our kind, retryable override).
ERROR_CODES: dict[str, tuple[str, bool | None]] = {
    "ThrottlingException": ("rate_limited", None),
    "ModelNotReadyException": ("rate_limited", None),  # a model scaling up: AWS says retry
    "ServiceQuotaExceededException": ("rate_limited", False),  # a quota: waiting will not fix it
    "ServiceUnavailableException": ("unavailable", None),
    "InternalServerException": ("unavailable", None),
    "ModelStreamErrorException": ("unavailable", None),
    "ModelErrorException": ("unavailable", None),
    "ModelTimeoutException": ("timeout", None),
    "AccessDeniedException": ("auth", None),
    "UnrecognizedClientException": ("auth", None),
    "InvalidSignatureException": ("auth", None),
    "ExpiredTokenException": ("auth", None),
    "ValidationException": ("bad_request", None),
    "ResourceNotFoundException": ("bad_request", None),
}
# Bedrock has no error code for an over-long prompt; its messages are the signal.
CONTEXT_LENGTH_MARKERS = ("input is too long", "too many input tokens", "prompt is too long", "context window",
                          "context length", "maximum context")


# -- request -----------------------------------------------------------------------


def request_to_wire(req: ChatRequest) -> dict[str, Any]:
    """Keyword arguments for `converse` / `converse_stream`."""
    params: dict[str, Any] = {"modelId": req.model, "messages": messages_to_wire(req.conversation())}
    system = _system_prompt(req)
    if system:
        params["system"] = [{"text": system}]
    inference = {"maxTokens": req.max_tokens, "temperature": req.temperature, "topP": req.top_p,
                 "stopSequences": list(req.stop) or None}
    inference = {k: v for k, v in inference.items() if v is not None}
    if inference:
        params["inferenceConfig"] = inference
    tool_config = _tool_config(req)
    if tool_config:
        params["toolConfig"] = tool_config
    output = _output_config(req.response_format)
    if output:
        params["outputConfig"] = output
    extra = req.extra.get("additional_model_request_fields")
    if isinstance(extra, dict):  # model-specific knobs from the route step (e.g. top_k)
        params["additionalModelRequestFields"] = extra
    return params


def _system_prompt(req: ChatRequest) -> str | None:
    system = req.system_prompt()
    if (req.response_format or {}).get("type") == "json_object":
        system = f"{system}\n\n{JSON_INSTRUCTION}" if system else JSON_INSTRUCTION
    return system


def _output_config(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    if not response_format or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema") or {}
    definition = {"schema": json.dumps(spec.get("schema") or {"type": "object"}),
                  "name": spec.get("name") or "response"}
    return {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}}


def _tool_config(req: ChatRequest) -> dict[str, Any] | None:
    history_has_tools = any(m.tool_calls or m.role == "tool" for m in req.messages)
    # Converse has no "none"; it refuses toolUse/toolResult blocks without a toolConfig,
    # so with tool turns in the history the tools go, left to the model's choice.
    if not req.tools or (req.tool_choice == "none" and not history_has_tools):
        return None
    config: dict[str, Any] = {"tools": [_tool(t) for t in req.tools]}
    if req.tool_choice == "required":
        config["toolChoice"] = {"any": {}}
    elif req.tool_choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif req.tool_choice and req.tool_choice != "none":
        config["toolChoice"] = {"tool": {"name": req.tool_choice}}
    return config


def _tool(tool) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": tool.name,
                            "inputSchema": {"json": tool.parameters or {"type": "object", "properties": {}}}}
    if tool.description:  # Bedrock refuses an empty description
        spec["description"] = tool.description
    return {"toolSpec": spec}


def messages_to_wire(conversation: list[Message]) -> list[dict[str, Any]]:
    """Our messages as Converse turns: roles alternate, tool results ride in user turns."""
    return alternating_turns(_turn(message) for message in conversation)


def _turn(message: Message) -> tuple[str, list[dict[str, Any]]]:
    if message.role == "tool":
        result = {"toolUseId": message.tool_call_id or "", "content": [{"text": message.text() or "(empty)"}]}
        if message.is_error:
            result["status"] = "error"
        return "user", [{"toolResult": result}]
    blocks = _content_blocks(message.content)
    if message.role == "assistant":
        return "assistant", blocks + [_tool_use(call) for call in message.tool_calls]
    return "user", blocks


def _content_blocks(content: str | list[ContentPart] | None) -> list[dict[str, Any]]:
    if not content:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    blocks: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, TextPart) and part.text:  # blank text blocks are a ValidationException
            blocks.append({"text": part.text})
        elif isinstance(part, ImagePart):
            blocks.append(_image_block(part))
    return blocks


def _image_block(part: ImagePart) -> dict[str, Any]:
    inline = part.data_url_parts()
    image_format = IMAGE_FORMATS.get(inline[0].lower()) if inline else None
    if inline is None or image_format is None:
        raise ProviderError("bad_request", "Bedrock takes images as base64 data: URLs of PNG, JPEG, GIF or WebP",
                            provider="bedrock")
    try:
        data = base64.b64decode(inline[1], validate=True)
    except ValueError:
        raise ProviderError("bad_request", "an image's base64 data does not decode", provider="bedrock") from None
    return {"image": {"format": image_format, "source": {"bytes": data}}}


def _tool_use(call: ToolCall) -> dict[str, Any]:
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):  # Converse needs the input as an object
        raise ProviderError("bad_request", f"tool call {call.id!r} has arguments that are not a JSON object",
                            provider="bedrock")
    return {"toolUse": {"toolUseId": call.id, "name": call.name, "input": arguments}}


# -- response ----------------------------------------------------------------------


def result_from_wire(obj: Mapping[str, Any]) -> ChatResult:
    """A Converse response (botocore's parsed dict) as our ChatResult; raises KeyError/TypeError on a bad shape."""
    blocks = obj["output"]["message"]["content"]
    texts = [b["text"] for b in blocks if "text" in b]
    calls = [ToolCall(id=b["toolUse"]["toolUseId"], name=b["toolUse"]["name"],
                      arguments=json.dumps(b["toolUse"].get("input") or {}))
             for b in blocks if "toolUse" in b]
    return ChatResult(
        content="".join(texts) if texts else (None if calls else ""),
        tool_calls=calls,
        finish_reason=finish_reason_from_wire(obj.get("stopReason"), bool(calls)),
        usage=usage_from_wire(obj.get("usage")),
        provider_request_id=(obj.get("ResponseMetadata") or {}).get("RequestId"),
    )


def finish_reason_from_wire(reason: str | None, has_tool_calls: bool = False) -> FinishReason:
    if reason is None:
        return "tool_calls" if has_tool_calls else "stop"
    return FINISH_REASONS.get(reason, "stop")


def usage_from_wire(usage: Mapping[str, Any] | None) -> Usage:
    if not usage:
        return Usage()
    read = usage.get("cacheReadInputTokens") or 0
    written = usage.get("cacheWriteInputTokens") or 0
    return Usage(input_tokens=(usage.get("inputTokens") or 0) + read + written,
                 output_tokens=usage.get("outputTokens") or 0, cached_tokens=read, cache_write_tokens=written)


class StreamState:
    """Turns ConverseStream events (botocore's parsed dicts) into StreamEvents.

    Tool calls are numbered among toolUse blocks only; text blocks have no
    start event. The stream is whole once `messageStop` came (`metadata`, with
    the usage, follows it).
    """

    def __init__(self) -> None:
        self.stop_reason: str | None = None
        self.tool_index: dict[int, int] = {}  # contentBlockIndex -> tool call index
        self.tool_has_arguments: dict[int, bool] = {}

    def events(self, event: Mapping[str, Any]) -> list[StreamEvent]:
        if "contentBlockStart" in event:
            return self._block_start(event["contentBlockStart"])
        if "contentBlockDelta" in event:
            return self._block_delta(event["contentBlockDelta"])
        if "contentBlockStop" in event:
            return self._block_stop(event["contentBlockStop"].get("contentBlockIndex", 0))
        if "messageStop" in event:
            self.stop_reason = event["messageStop"].get("stopReason") or "end_turn"
        elif "metadata" in event and event["metadata"].get("usage"):
            return [StreamEvent(type="usage", usage=usage_from_wire(event["metadata"]["usage"]))]
        return []  # messageStart, reasoning, future events: nothing for our clients

    def _block_start(self, start: Mapping[str, Any]) -> list[StreamEvent]:
        tool = (start.get("start") or {}).get("toolUse")
        if not tool:
            return []
        block = start.get("contentBlockIndex", 0)
        position = self.tool_index[block] = len(self.tool_index)
        self.tool_has_arguments[block] = False
        return [StreamEvent(type="tool_call", index=position, tool_call_id=tool["toolUseId"], name=tool["name"])]

    def _block_delta(self, delta_event: Mapping[str, Any]) -> list[StreamEvent]:
        delta, block = delta_event.get("delta") or {}, delta_event.get("contentBlockIndex", 0)
        if delta.get("text"):
            return [StreamEvent(type="delta", text=delta["text"])]
        piece = (delta.get("toolUse") or {}).get("input")
        if piece and block in self.tool_index:
            self.tool_has_arguments[block] = True
            return [StreamEvent(type="tool_call", index=self.tool_index[block], arguments=piece)]
        return []

    def _block_stop(self, block: int) -> list[StreamEvent]:
        if block in self.tool_index and not self.tool_has_arguments[block]:
            # A tool without parameters streams no input at all; "{}" keeps the arguments valid JSON.
            self.tool_has_arguments[block] = True
            return [StreamEvent(type="tool_call", index=self.tool_index[block], arguments="{}")]
        return []

    def final(self, provider: str) -> StreamEvent:
        if self.stop_reason is None:
            error = ProviderError("unavailable", f"{provider}: stream ended before messageStop", provider=provider)
            return StreamEvent(type="error", error=error)
        return StreamEvent(type="done", finish_reason=finish_reason_from_wire(self.stop_reason,
                                                                              bool(self.tool_index)))


# -- errors ------------------------------------------------------------------------


def retry_after_from_wire(headers: Mapping[str, str] | None) -> float | None:
    try:
        value = (headers or {}).get("retry-after")
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def error_from_sdk(exc: BaseException, *, provider: str = "bedrock", secret: str = "") -> ProviderError:
    """Any failure of a Bedrock call as a ProviderError; messages never carry the credential."""
    if isinstance(exc, ProviderError):
        return exc
    kind, text, status, retry_after, retryable = _classify(exc)
    for part in _secret_parts(secret):
        text = text.replace(part, "***")
    return ProviderError(kind, f"{provider}: {text}", status=status, retry_after=retry_after,  # type: ignore[arg-type]
                         retryable=retryable, provider=provider)


def _secret_parts(secret: str) -> list[str]:
    """The credential and, for AWS keys, the secret key and session token inside it."""
    parts = [secret] if secret else []
    try:
        keys = aws_keys(secret)
        parts += [p for p in (keys.secret_access_key, keys.session_token) if p]
    except ValueError:
        pass
    return parts


def _classify(exc: BaseException) -> tuple[str, str, int | None, float | None, bool | None]:
    """(kind, message, status, retry_after, retryable override) for one exception."""
    if isinstance(exc, boto_errors.ClientError):  # HTTP errors and exception events in a stream
        return _client_error(exc)
    failure = connection_failure(exc)
    if failure:
        return "unavailable", f"connection failed: {failure}", None, None, None
    if isinstance(exc, (boto_errors.ReadTimeoutError, boto_errors.ConnectTimeoutError, asyncio.TimeoutError,
                        aiohttp.ServerTimeoutError)):
        return "timeout", f"Bedrock did not answer in time ({type(exc).__name__})", None, None, None
    if isinstance(exc, (boto_errors.NoCredentialsError, boto_errors.PartialCredentialsError,
                        boto_errors.CredentialRetrievalError)):
        return "auth", f"no usable AWS credentials ({type(exc).__name__})", None, None, None
    if isinstance(exc, (eventstream.ParserError, ResponseParserError, KeyError, TypeError, ValueError)):
        return "unavailable", f"malformed response from Bedrock ({type(exc).__name__})", None, None, None
    if isinstance(exc, (boto_errors.HTTPClientError, boto_errors.ResponseStreamingError, aiohttp.ClientError,
                        ConnectionError)):
        # A refused or dropped connection, a stream cut mid-answer included.
        return "unavailable", f"connection to Bedrock failed ({type(exc).__name__})", None, None, None
    log.warning("unexpected error from aiobotocore: %s", type(exc).__name__, exc_info=exc)
    return "unavailable", f"Bedrock call failed ({type(exc).__name__})", None, None, None


def _client_error(exc: boto_errors.ClientError) -> tuple[str, str, int | None, float | None, bool | None]:
    error = exc.response.get("Error") or {}
    meta = exc.response.get("ResponseMetadata") or {}
    code = str(error.get("Code") or "")
    code = code[:1].upper() + code[1:]  # stream exception events say "throttlingException"
    status = meta.get("HTTPStatusCode")
    status = status if isinstance(status, int) and status != 200 else None
    message = str(error.get("Message") or "")[:500]
    kind, retryable = ERROR_CODES.get(code) or (_kind_for_status(status), None)
    if kind == "bad_request" and any(m in message.lower() for m in CONTEXT_LENGTH_MARKERS):
        kind = "context_length"
    retry_after = retry_after_from_wire(meta.get("HTTPHeaders")) if kind in ("rate_limited", "unavailable") else None
    label = " ".join(str(p) for p in (status, code) if p) or "error"
    return kind, f"Bedrock {label}: {message}" if message else f"Bedrock {label}", status, retry_after, retryable


def _kind_for_status(status: int | None) -> str:
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth"
    if status in (408, 504):
        return "timeout"
    if status is None or status >= 500:
        return "unavailable"
    return "bad_request"


# -- the adapter -------------------------------------------------------------------


def _load_service_model(session: AioSession) -> None:
    """Fill the session's loader cache with the files create_client would read."""
    loader = session.get_component("data_loader")
    loader.load_service_model(SERVICE, "service-2")
    loader.load_service_model(SERVICE, "endpoint-rule-set-1")
    loader.load_data("partitions")
    loader.load_data("sdk-default-configuration")


class BedrockAdapter(Adapter):
    kind = "bedrock"
    capabilities = Capabilities(
        streaming=True, tools=True, parallel_tool_calls=True, images=True, json_mode=True, json_schema=True,
        system_prompt=True,
        notes=("AWS Bedrock Converse/ConverseStream via aiobotocore; the model is a Bedrock model id or "
               "inference profile. Images as data: URLs only; json_object is asked for in the system prompt."),
    )

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__(config)
        self._client: Any = None  # made on first use: aiobotocore's client belongs to a running loop
        self._opening = asyncio.Lock()
        self._setup_error: ProviderError | None = None
        try:
            self._kwargs = client_kwargs(config)
        except ValueError as exc:
            name = config.name or self.kind
            self._setup_error = ProviderError("auth", f"{name}: {exc}", provider=name)

    async def _bedrock(self) -> Any:
        if self._setup_error is not None:
            raise self._setup_error
        async with self._opening:
            if self._client is None:
                session = AioSession()
                if self.config.options.get("role_arn"):
                    session.register_component("credential_provider", AssumedRole(self.config))
                # botocore reads and parses its JSON service model (~30 ms) synchronously
                # inside create_client: do that part in a thread, off the event loop.
                await asyncio.to_thread(_load_service_model, session)
                self._client = await session.create_client(SERVICE, **self._kwargs).__aenter__()
        return self._client

    def _error(self, exc: BaseException) -> ProviderError:
        return error_from_sdk(exc, provider=self.config.name or self.kind, secret=self.config.credential)

    async def chat(self, request: ChatRequest) -> ChatResult:
        try:
            params = request_to_wire(request)
            response = await (await self._bedrock()).converse(**params)
            result = result_from_wire(response)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a ProviderError
            raise self._error(exc) from None  # `from None`: botocore errors hold the signed request
        result.model = request.model
        return result

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        state = StreamState()
        upstream = None
        try:
            params = request_to_wire(request)
            response = await (await self._bedrock()).converse_stream(**params)
            upstream = response["stream"]
            async for raw in upstream:
                for event in state.events(raw):
                    yield event
            yield state.final(self.config.name or self.kind)
        except Exception as exc:  # noqa: BLE001 - a stream ends in an error event, never raises
            yield StreamEvent(type="error", error=self._error(exc))
        finally:
            # Runs on early close too: closing the HTTP response frees the connection
            # and tells Bedrock the client left.
            if upstream is not None:
                upstream.close()

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.__aexit__(None, None, None)
