"""Anthropic Messages API request schema and its conversion to providers.types.

Only the client-facing wire lives here (what Claude SDKs and Claude Code send
us, and the error shape they parse); api/anthropic_compat.py renders answers
and serves the endpoints.

Choices worth knowing:
- Unknown request fields (thinking, context_management, top_k, service_tier,
  ...) are accepted and ignored, as the OpenAI endpoint does with its extras:
  Claude Code sends several, and the pipeline has no equivalent for them.
- `thinking` / `redacted_thinking` blocks in history are dropped: they only
  mean something to Anthropic, and we never ask a provider for thinking.
- Content we cannot carry to every provider (documents, server tools) is a
  400 rather than silently dropped, so a model never answers without it.
- `role: "system"` inside `messages` (Claude Code sends one) becomes a system
  message in place.
- `cache_control` prompt-cache breakpoints on text and image blocks, system
  blocks and tool definitions reach an Anthropic provider as sent (other
  providers cache on their own and ignore them); on tool_use / tool_result
  blocks they are dropped.
- A tool result with `is_error` keeps the flag (Message.is_error: Anthropic and
  Bedrock providers get it as theirs) and its text is prefixed with "Error: ",
  so providers without such a flag still see that the tool failed.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from django.http import HttpResponse
from ninja import Field
from pydantic import ConfigDict, Discriminator, Tag

from api.responses import json_response
from api.wire_model import WireModel
from gateway.errors import GatewayError, InvalidRequest
from providers.types import ChatRequest, ContentPart, ImagePart, Message, TextPart, Tool, ToolCall

# Tokens we count for an image in count_tokens: Anthropic's cost of a
# ~1.15 megapixel image (width * height / 750), the size it resizes to.
IMAGE_TOKENS = 1600
DROPPED_BLOCKS = ("thinking", "redacted_thinking")


class _Lenient(WireModel):
    # citations and future fields ride along on blocks; ignore them.
    model_config = ConfigDict(extra="ignore")


class CacheControlIn(WireModel):
    """Anthropic's prompt-cache breakpoint: ephemeral, for 5 minutes (default) or an hour."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


def _cache_control(value: CacheControlIn | None) -> dict[str, Any] | None:
    return value.model_dump(exclude_none=True) if value is not None else None


class TextBlockIn(_Lenient):
    type: Literal["text"]
    text: str
    cache_control: CacheControlIn | None = None


class ImageSourceIn(_Lenient):
    type: Literal["base64", "url"]
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class ImageBlockIn(_Lenient):
    type: Literal["image"]
    source: ImageSourceIn
    cache_control: CacheControlIn | None = None


class OtherBlockIn(WireModel):
    """A block type we do not convert: thinking (dropped) or one we refuse."""

    model_config = ConfigDict(extra="allow")
    type: str


def _block_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("text", "image", "tool_use", "tool_result") else "other"


ResultPart = Annotated[
    Annotated[TextBlockIn, Tag("text")]
    | Annotated[ImageBlockIn, Tag("image")]
    | Annotated[OtherBlockIn, Tag("other")]
    | Annotated[OtherBlockIn, Tag("tool_use")]
    | Annotated[OtherBlockIn, Tag("tool_result")],
    Discriminator(_block_tag),
]


class ToolUseBlockIn(_Lenient):
    type: Literal["tool_use"]
    id: str = Field(..., min_length=1)
    name: str = Field(..., min_length=1)
    input: dict[str, Any]


class ToolResultBlockIn(_Lenient):
    type: Literal["tool_result"]
    tool_use_id: str = Field(..., min_length=1)
    content: str | list[ResultPart] | None = None
    is_error: bool | None = None


Block = Annotated[
    Annotated[TextBlockIn, Tag("text")]
    | Annotated[ImageBlockIn, Tag("image")]
    | Annotated[ToolUseBlockIn, Tag("tool_use")]
    | Annotated[ToolResultBlockIn, Tag("tool_result")]
    | Annotated[OtherBlockIn, Tag("other")],
    Discriminator(_block_tag),
]


class MessageIn(_Lenient):
    role: Literal["user", "assistant", "system"]
    content: str | list[Block]


class ToolIn(_Lenient):
    type: str | None = None  # "custom" or absent; server tools have other types
    name: str = Field(..., min_length=1, max_length=128)
    description: str = ""
    input_schema: dict[str, Any] | None = None
    cache_control: CacheControlIn | None = None


class ToolChoiceIn(_Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class MetadataIn(WireModel):
    # Anthropic defines only user_id; run_id / step are ours, as on /v1/chat/completions.
    model_config = ConfigDict(extra="allow")
    user_id: str | None = None
    run_id: str | None = None
    step: str | None = None


class OutputConfigIn(_Lenient):
    format: dict[str, Any] | None = None


class CountTokensIn(_Lenient):
    model: str = Field(..., min_length=1, max_length=300)
    messages: list[MessageIn] = Field(..., min_length=1)
    system: str | list[TextBlockIn] | None = None
    tools: list[ToolIn] | None = None
    tool_choice: ToolChoiceIn | None = None
    output_config: OutputConfigIn | None = None


class MessagesIn(CountTokensIn):
    max_tokens: int = Field(..., ge=1)
    metadata: MetadataIn | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)


# -- Anthropic -> normalized ---------------------------------------------------------


def _unsupported(block: OtherBlockIn) -> None:
    if block.type not in DROPPED_BLOCKS:
        raise InvalidRequest(
            f"Content blocks of type '{block.type}' are not supported by this gateway.", param="messages"
        )


def _image(block: ImageBlockIn) -> ImagePart:
    source = block.source
    cache_control = _cache_control(block.cache_control)
    if source.type == "url" and source.url:
        return ImagePart(source.url, cache_control=cache_control)
    if source.type == "base64" and source.data and source.media_type:
        return ImagePart(f"data:{source.media_type};base64,{source.data}", cache_control=cache_control)
    raise InvalidRequest("An image source needs `url`, or `media_type` and `data`.", param="messages")


def _parts(blocks: list) -> list[ContentPart]:
    parts: list[ContentPart] = []
    for block in blocks:
        if isinstance(block, TextBlockIn):
            parts.append(TextPart(block.text, cache_control=_cache_control(block.cache_control)))
        elif isinstance(block, ImageBlockIn):
            parts.append(_image(block))
        else:
            _unsupported(block)
    return parts


def _tool_result(block: ToolResultBlockIn) -> Message:
    content: str | list[ContentPart] = (
        block.content if isinstance(block.content, str) else _parts(block.content or [])
    )
    if block.is_error:
        content = "Error: " + content if isinstance(content, str) else [TextPart("Error: "), *content]
    return Message(role="tool", content=content, tool_call_id=block.tool_use_id, is_error=bool(block.is_error))


def _user_turn(blocks: list) -> list[Message]:
    # Tool results go first, as their own messages: OpenAI-style providers want
    # them right after the assistant turn that called the tools.
    results = [_tool_result(b) for b in blocks if isinstance(b, ToolResultBlockIn)]
    rest = [b for b in blocks if not isinstance(b, ToolResultBlockIn)]
    if rest or not results:
        return [*results, Message(role="user", content=_parts(rest))]
    return results


def _assistant_turn(blocks: list) -> Message:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in blocks:
        if isinstance(block, TextBlockIn):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlockIn):
            calls.append(ToolCall(block.id, block.name, json.dumps(block.input)))
        elif isinstance(block, OtherBlockIn):
            _unsupported(block)
    return Message(role="assistant", content="".join(texts) or (None if calls else ""), tool_calls=calls)


def to_messages(message: MessageIn) -> list[Message]:
    if isinstance(message.content, str):
        return [Message(role=message.role, content=message.content)]
    if message.role == "assistant":
        return [_assistant_turn(message.content)]
    if message.role == "system":
        return [
            Message(
                role="system",
                content="".join(p.text for p in _parts(message.content) if isinstance(p, TextPart)),
            )
        ]
    return _user_turn(message.content)


def _system(system: str | list[TextBlockIn] | None) -> list[Message]:
    if isinstance(system, list) and any(b.cache_control for b in system):
        # One system message per block keeps each breakpoint where the caller put
        # it; providers that take the prompt whole join them as they join blocks.
        return [Message(role="system", content=[TextPart(b.text, cache_control=_cache_control(b.cache_control))])
                for b in system if b.text]
    text = system if isinstance(system, str) else "\n\n".join(b.text for b in system or [])
    return [Message(role="system", content=text)] if text else []


def _tools(tools: list[ToolIn] | None) -> list[Tool]:
    out = []
    for tool in tools or []:
        if tool.input_schema is None or tool.type not in (None, "custom"):
            raise InvalidRequest(
                f"Tool '{tool.name}' is a server tool ({tool.type}); only custom tools with "
                "an input_schema are supported by this gateway.",
                param="tools",
            )
        out.append(Tool(tool.name, tool.description, tool.input_schema,
                        cache_control=_cache_control(tool.cache_control)))
    return out


def _tool_choice(choice: ToolChoiceIn | None) -> tuple[str | None, bool | None]:
    """(normalized tool_choice, parallel_tool_calls)."""
    if choice is None:
        return None, None
    if choice.type == "tool" and not choice.name:
        raise InvalidRequest("tool_choice of type 'tool' must name the tool.", param="tool_choice")
    name = {"auto": "auto", "any": "required", "none": "none"}.get(choice.type, choice.name)
    return name, (False if choice.disable_parallel_tool_use else None)


def _response_format(config: OutputConfigIn | None) -> dict[str, Any] | None:
    fmt = config.format if config else None
    if not fmt or fmt.get("type") != "json_schema":
        return None
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt.get("schema") or {}}}


def to_chat_request(body: CountTokensIn) -> ChatRequest:
    messages = _system(body.system)
    for message in body.messages:
        messages += to_messages(message)
    tool_choice, parallel = _tool_choice(body.tool_choice)
    metadata = getattr(body, "metadata", None)
    return ChatRequest(
        model=body.model,
        messages=messages,
        tools=_tools(body.tools),
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        temperature=getattr(body, "temperature", None),
        top_p=getattr(body, "top_p", None),
        max_tokens=getattr(body, "max_tokens", None),
        stop=list(getattr(body, "stop_sequences", None) or []),
        response_format=_response_format(body.output_config),
        user=metadata.user_id if metadata else None,
    )


def estimate_input_tokens(request: ChatRequest) -> int:
    """Roughly what a provider would count for this prompt (about 4 characters a token)."""
    pieces: list[str] = []
    images = 0
    for message in request.messages:
        pieces.append(message.text())
        pieces += [call.name + call.arguments for call in message.tool_calls]
        if isinstance(message.content, list):
            images += sum(1 for part in message.content if isinstance(part, ImagePart))
    pieces += [
        json.dumps({"name": t.name, "description": t.description, "schema": t.parameters})
        for t in request.tools
    ]
    return max(1, len("".join(pieces)) // 4) + images * IMAGE_TOKENS


# Anthropic's error `type` per HTTP status; its SDKs pick the exception class by status.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def owns(path: str, headers) -> bool:
    """Whether errors on this request are rendered in Anthropic's shape: the
    Messages API's paths, and the model list when an Anthropic SDK asks for it
    (it sends `anthropic-version`; OpenAI's SDKs do not)."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return True
    return (path == "/v1/models" or path.startswith("/v1/models/")) and "anthropic-version" in headers


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_json(status: int, message: str, code: str, request_id: str) -> dict[str, Any]:
    # Our stable code rides in error.details.error_code, where the anthropic SDK
    # reads a machine-readable cause (APIStatusError.error_code).
    return {
        "type": "error",
        "request_id": request_id,
        "error": {"type": error_type(status), "message": message, "details": {"error_code": code}},
    }


def error_response(error: GatewayError, request_id: str) -> HttpResponse:
    body = error_json(error.status, error.message, error.code, request_id)
    # `request-id` is the header Anthropic's SDKs read into their errors.
    headers = {**error.headers, "request-id": request_id}
    return json_response(body, request_id, status=error.status, headers=headers)
