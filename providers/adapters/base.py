"""The tiny base every adapter implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from providers.types import Capabilities, ChatRequest, ChatResult, StreamEvent


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

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """An async iterator of StreamEvents ending in `done` or `error`.

        Closing the iterator early (client went away) must stop the upstream
        call and release its connection.
        """
        raise NotImplementedError

    def model_capabilities(self, model: str) -> Capabilities:
        """Per-model refinement of `capabilities`; the default is the kind's."""
        return self.capabilities

    async def aclose(self) -> None:
        """Release the SDK client's connections."""
