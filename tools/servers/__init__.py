"""One connection class per server kind, the same two methods on each:
`list_tools()` -> [ToolDef] and `call_tool(name, arguments, ctx, timeout)` -> ToolResult.
tools/registry.py picks the class by ToolServer.kind (`connection_for`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from django.core.exceptions import ValidationError

from tools.types import ToolContext, ToolResult


@dataclass(frozen=True, slots=True)
class ToolDef:
    """A tool as its server lists it (not yet approved)."""

    name: str
    description: str
    input_schema: dict[str, Any]


class ServerConnection(Protocol):
    async def list_tools(self) -> list[ToolDef]: ...

    async def call_tool(self, name: str, arguments: dict[str, Any], ctx: ToolContext,
                        timeout: float) -> ToolResult: ...


def connection_for(server) -> ServerConnection:
    """The connection for a ToolServer row (tools.models.ToolServer)."""
    if server.kind == "builtin":
        from tools.servers.builtin import BuiltinServer

        return BuiltinServer(server)
    if server.kind in ("http", "stdio"):
        from tools.servers.mcp_remote import McpRemoteServer

        return McpRemoteServer(server)
    raise NotImplementedError(f"tool server kind {server.kind!r} is not built yet")


def failure_sentence(exc: BaseException) -> str:
    """What operators see of a server's failure: the kind of failure, never its text (which may
    carry a URL with a token, or a server's internals)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "did not answer in time"
    if isinstance(exc, ValidationError):  # our own SSRF guard: it names the host and address only
        return f"refused: {exc.messages[0]}"
    if isinstance(exc, ConnectionError) or "Connect" in type(exc).__name__:
        return f"could not connect ({type(exc).__name__})"
    return f"failed ({type(exc).__name__})"
