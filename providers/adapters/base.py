"""The tiny base every adapter implements, and the names its module's functions take.

Every adapter module names the same job the same way, as a module-level function
(or class) that the Adapter subclass calls; a module has a name only where it has
the job. "wire" is what the SDK call takes or gives back:

- `request_to_wire(request, ...)`: our ChatRequest -> the SDK call's arguments.
- `messages_to_wire(conversation, ...)`: the conversation part of those, when it
  has a function of its own.
- `result_from_wire(response, ...)`: the SDK's whole (non-streamed) response -> ChatResult.
- `finish_reason_from_wire(reason, has_tool_calls, ...)`: the provider's stop reason -> FinishReason.
- `usage_from_wire(usage, ...)`: the provider's token counts -> Usage.
- `StreamState`: what one stream has seen; `events(chunk)` turns one streamed
  chunk or message into our StreamEvents (how the stream's end is judged is the
  provider's own).
- `error_from_sdk(exc, ...)`: an exception from the SDK call -> ProviderError, key scrubbed.
- `error_kind_from_wire(...)`: the error kind of a failure the provider reports in
  its answer rather than raises.
- `retry_after_from_wire(...)`: the provider's retry hint, in seconds.

Helpers stay private (`_name`), and keep the direction in the name: `_x_to_wire`
goes to the provider, `_x_from_wire` comes back. The demo adapter calls no SDK
and so has none of these.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from providers.types import (
    Capabilities,
    ChatRequest,
    ChatResult,
    EmbeddingRequest,
    EmbeddingResult,
    ModelListing,
    ProviderError,
    StreamEvent,
)

# Connections one worker may hold open to one provider. Every open stream holds
# one for its whole length: the SDKs' defaults (1,000 for openai and anthropic,
# 100 for the httpx transport under google-genai) capped a worker's concurrent
# streams there; the rest queued for a connection until they timed out
# (docs/PERFORMANCE.md, long streams). options["max_connections"] overrides.
UPSTREAM_MAX_CONNECTIONS = 10_000
UPSTREAM_KEEPALIVE_CONNECTIONS = 100


def upstream_limits(config: AdapterConfig, limits_class: type) -> Any:
    """The connection limits for this provider's HTTP client, in its library's `Limits` class."""
    return limits_class(max_connections=int(config.options.get("max_connections", UPSTREAM_MAX_CONNECTIONS)),
                        max_keepalive_connections=UPSTREAM_KEEPALIVE_CONNECTIONS)


def alternating_turns(blocks_by_message: Iterable[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """(role, content blocks) per message as turns whose roles alternate, as
    Anthropic's Messages API and Bedrock's Converse both require: a message
    with no blocks is dropped (both reject empty content), and consecutive
    messages of one role (parallel tool results) join one turn."""
    turns: list[dict[str, Any]] = []
    for role, blocks in blocks_by_message:
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return turns


@dataclass(frozen=True, slots=True)
class AdapterConfig:
    """What an adapter needs to build its client; credential already decrypted.

    Never log or repr this: it holds the provider key. `repr=False` keeps the
    credential out of tracebacks and debug output.
    """

    provider_id: int
    name: str
    kind: str
    base_url: str = ""
    credential: str = field(default="", repr=False)
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    options: dict[str, Any] = field(default_factory=dict)

    def cache_key(self) -> tuple:
        # hash() of the credential, not the credential, so the key is safe to show
        return (
            self.provider_id,
            self.kind,
            self.base_url,
            hash(self.credential),
            self.connect_timeout,
            self.read_timeout,
            tuple(sorted((k, repr(v)) for k, v in self.options.items())),
        )


class Adapter:
    """Turns a normalized ChatRequest into one provider's SDK call and back.

    Subclasses build one long-lived SDK client in __init__ and reuse it.
    Failures are raised (chat) or yielded as a final `error` event (stream)
    as providers.types.ProviderError, never as SDK exceptions.
    """

    kind: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, config: AdapterConfig) -> None:
        self.config = config

    async def chat(self, request: ChatRequest) -> ChatResult:
        raise NotImplementedError

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """Vectors for `request.inputs`; only adapters whose Capabilities say `embeddings`."""
        raise ProviderError("bad_request", f"{self.kind} does not serve embeddings", provider=self.config.name)

    async def list_models(self) -> list[ModelListing] | None:
        """The models the provider's list-models endpoint names; None when it has
        none (the catalog then comes from the bundled genai-prices data)."""
        return None

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """An async iterator of StreamEvents ending in `done` or `error`.

        Closing the iterator early (client went away) must stop the upstream
        call and release its connection.
        """
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release the SDK client's connections."""


def connection_failure(err: BaseException | None) -> str | None:
    """What a failed connection really was, read down the exception's chain of
    causes, or None when nothing in it says (a genuine timeout, a dropped stream).

    SDKs wrap the socket error two or three times, and not always truthfully:
    the aiohttp transport under the OpenAI SDK reports every connection error,
    a DNS failure included, as a connect *timeout*. An operator told "timeout"
    looks at the network's speed; told "does not resolve", at the base URL.
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, socket.gaierror):
            return f"DNS lookup failed: the host does not resolve ({err.strerror or err})"
        if isinstance(err, ConnectionRefusedError):
            return "connection refused: nothing listens at that address and port"
        if isinstance(err, ssl.SSLError):
            return f"TLS handshake failed ({err.reason or err})"
        err = err.__cause__ or err.__context__
    return None
