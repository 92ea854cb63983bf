"""What the rest of the platform sees of a tool: its spec, the context a call
runs in, and its result. Plain dataclasses, no ORM objects."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from accounts.snapshot import KeyInfo


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as a model or an MCP client sees it (the approved definition)."""

    server: str
    name: str
    description: str
    input_schema: dict[str, Any]
    tool_id: int = 0
    rate_limit_per_minute: int | None = None

    @property
    def qualified_name(self) -> str:
        return f"{self.server}__{self.name}"


class ToolError(Exception):
    """A tool's refusal or failure whose message is safe to show the model (no
    secret, no internal detail); any other exception is sanitised by the registry."""

    def __init__(self, message: str, *, code: str = "tool_error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# ask_persona's way back into the gateway: (persona slug, question) -> answer text.
# The gateway provides it, so this layer never imports the gateway.
AskPersona = Callable[[str, str], Awaitable[str]]


@dataclass(slots=True)
class ToolContext:
    """Who is calling and on whose behalf: every call is logged and billed with it."""

    key: KeyInfo
    request_id: str = ""
    run_id: str = ""
    persona: str = ""
    source: str = "loop"  # ToolCallLog.SOURCES
    ask: AskPersona | None = None
    # Seconds left for tools in this loop (the persona's max_tool_seconds); None: the server's timeout alone.
    time_left: float | None = None
    # How deep ask_persona has nested (a persona asking a persona asking ...).
    depth: int = 0


@dataclass(slots=True)
class ToolResult:
    """What goes back to the model (or the MCP client). An error is a result too:
    the model reads `content` and may try again; is_error marks it."""

    content: str
    is_error: bool = False
    error_code: str = ""  # e.g. tool_timeout, invalid_arguments, tool_unavailable, tool_rate_limited, tool_error
    structured: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
