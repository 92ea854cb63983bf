"""Normalized request/response types shared by every adapter.

Each adapter converts these to its provider's wire structs and back; the
provider's own shapes never leave its adapter module. Plain dataclasses with
slots: they sit on the hot path and are built for every request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]


@dataclass(slots=True)
class TextPart:
    text: str
    type: Literal["text"] = "text"
    # A provider prompt-cache breakpoint on this part (Anthropic's cache_control,
    # e.g. {"type": "ephemeral"}); adapters of providers that cache by themselves ignore it.
    cache_control: dict[str, Any] | None = None


@dataclass(slots=True)
class ImagePart:
    """An image given by URL (https or a `data:` URL with base64 content)."""

    url: str
    detail: str | None = None
    type: Literal["image"] = "image"
    cache_control: dict[str, Any] | None = None  # as on TextPart

    def data_url_parts(self) -> tuple[str, str] | None:
        """(media_type, base64_data) for a data: URL, else None."""
        if not self.url.startswith("data:") or ";base64," not in self.url:
            return None
        head, data = self.url[5:].split(";base64,", 1)
        return head or "application/octet-stream", data


ContentPart = TextPart | ImagePart


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, exactly as the model produced it


@dataclass(slots=True)
class Message:
    role: Role
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None  # for role == "tool"
    name: str | None = None
    # A tool result that reports a failure (Anthropic's tool_result is_error, Bedrock's
    # toolResult status "error"); providers without such a flag read it in the text.
    is_error: bool = False

    def text(self) -> str:
        """The message's text parts joined; images are left out."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


@dataclass(slots=True)
class Tool:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    # Ask the provider to hold the model to `parameters` exactly (OpenAI's strict
    # function calling); providers without the feature ignore it.
    strict: bool | None = None
    cache_control: dict[str, Any] | None = None  # as on TextPart: caches the tool definitions up to this one


def has_cache_breakpoint(messages: list[Message], tools: list[Tool]) -> bool:
    """Whether the caller marked any prompt-cache breakpoint of its own."""
    if any(t.cache_control for t in tools):
        return True
    return any(isinstance(m.content, list) and any(p.cache_control for p in m.content) for m in messages)


# "auto" | "none" | "required" | a tool name to force
ToolChoice = str


@dataclass(slots=True)
class ChatRequest:
    model: str  # the provider's model name
    messages: list[Message]
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    # {"type": "json_object"} or {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    user: str | None = None
    # Token log probabilities of the answer (OpenAI's logprobs / top_logprobs);
    # only routes whose providers have them accept these (Capabilities.logprobs).
    logprobs: bool = False
    top_logprobs: int | None = None
    # The API the caller used: "responses" for OpenAI's Responses API, which an
    # adapter that speaks it upstream (openai) may carry natively.
    api: Literal["chat", "responses"] = "chat"
    # Adapter-specific knobs that come from the route step's params (e.g.
    # claude_agent's allowed_tools); adapters ignore keys they do not know.
    extra: dict[str, Any] = field(default_factory=dict)

    def system_prompt(self) -> str | None:
        """All system messages joined, for providers that take it apart."""
        parts = [m.text() for m in self.messages if m.role == "system"]
        return "\n\n".join(parts) if parts else None

    def conversation(self) -> list[Message]:
        """The messages other than system ones."""
        return [m for m in self.messages if m.role != "system"]


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0  # all prompt tokens, cached ones included
    output_tokens: int = 0  # all completion tokens, reasoning ones included
    cached_tokens: int = 0  # input tokens read from the provider's cache
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0
    # A cost the provider reported itself (claude_agent); None means "price it".
    reported_cost_usd: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class ChatResult:
    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)
    model: str = ""  # the model that answered, as the provider named it
    provider_request_id: str | None = None
    # The answer's token log probabilities in OpenAI's shape ({"content": [...]}),
    # when the request asked for them.
    logprobs: dict[str, Any] | None = None


@dataclass(slots=True)
class EmbeddingRequest:
    model: str  # the provider's model name
    # Texts, or token-id arrays in OpenAI's tokenizer (only for adapters whose
    # Capabilities say token_inputs: the tokens mean something to that tokenizer only).
    inputs: list[str] | list[list[int]]
    dimensions: int | None = None
    user: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


    def has_tokens(self) -> bool:
        return bool(self.inputs) and isinstance(self.inputs[0], list)


@dataclass(slots=True)
class ModelListing:
    """One model as a provider's list-models endpoint describes it (what it says; None: not said)."""

    name: str
    context_window: int | None = None
    max_output_tokens: int | None = None
    embeddings: bool | None = None  # an embedding model (it serves embeddings, not chat)


@dataclass(slots=True)
class EmbeddingResult:
    vectors: list[list[float]]  # one per input, in order
    usage: Usage = field(default_factory=Usage)
    model: str = ""


StreamEventType = Literal["delta", "tool_call", "usage", "done", "error"]


@dataclass(slots=True)
class StreamEvent:
    """One step of a normalized stream.

    - delta: `text` is the next piece of the answer.
    - tool_call: `index` names which call in this turn; the first event for an
      index carries `tool_call_id` and `name`, later ones carry more
      `arguments` text (the pieces concatenate to the JSON arguments).
    - usage: `usage` holds the totals so far (the last one wins).
    - done: `finish_reason` is set; nothing follows.
    - error: `error` is the ProviderError; nothing follows.
    """

    type: StreamEventType
    text: str = ""
    index: int = 0
    tool_call_id: str | None = None
    name: str | None = None
    arguments: str = ""
    usage: Usage | None = None
    finish_reason: FinishReason | None = None
    error: "ProviderError | None" = None


ErrorKind = Literal[
    "rate_limited",
    "timeout",
    "unavailable",
    "bad_request",
    "auth",
    "context_length",
    "content_filter",
]

_RETRYABLE: dict[str, bool] = {
    "rate_limited": True,
    "timeout": True,
    "unavailable": True,
    "bad_request": False,
    "auth": False,
    "context_length": False,
    "content_filter": False,
}


class ProviderError(Exception):
    """A provider call failed; `kind` is one of the shared taxonomy.

    `retryable` says whether the same call may succeed later (429, 5xx,
    timeouts); `retry_after` is the provider's own hint in seconds, if any.
    The message must never contain a credential.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        retryable: bool | None = None,
        retry_after: float | None = None,
        status: int | None = None,
        provider: str = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = _RETRYABLE[kind] if retryable is None else retryable
        self.retry_after = retry_after
        self.status = status
        self.provider = provider

    def __repr__(self) -> str:
        return f"ProviderError({self.kind!r}, {self.message!r}, retryable={self.retryable})"


@dataclass(slots=True)
class Capabilities:
    """What an adapter (and so its provider) supports; served by /capabilities."""

    streaming: bool = True
    tools: bool = True
    parallel_tool_calls: bool = True
    images: bool = False
    json_mode: bool = False
    json_schema: bool = False
    system_prompt: bool = True
    reports_cost: bool = False
    embeddings: bool = False
    token_inputs: bool = False  # embeddings of token-id arrays (OpenAI's tokenizer)
    logprobs: bool = False
    strict_tools: bool = False
    notes: str = ""
