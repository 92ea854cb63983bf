"""The built-in tool server: tools that run in-process, safe by default.

Each tool is an async function registered with `@builtin_tool(name, description,
properties, required)`; it gets its validated arguments, the ToolContext and the
server row (for options such as the exec allow-list) and returns a ToolResult
or a string, or raises ToolError with a message the model may read. The tools
themselves live in tools/builtin/, one module per theme.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tools.servers import ToolDef
from tools.types import ToolContext, ToolError, ToolResult

BuiltinFunction = Callable[[dict[str, Any], ToolContext, Any], Awaitable[ToolResult | str]]


@dataclass(frozen=True, slots=True)
class BuiltinTool:
    name: str
    description: str
    input_schema: dict[str, Any]
    function: BuiltinFunction


BUILTIN_TOOLS: dict[str, BuiltinTool] = {}


def builtin_tool(name: str, description: str, properties: dict[str, Any] | None = None,
                 required: tuple[str, ...] = ()) -> Callable[[BuiltinFunction], BuiltinFunction]:
    schema = {"type": "object", "properties": properties or {}, "required": list(required),
              "additionalProperties": False}

    def register(function: BuiltinFunction) -> BuiltinFunction:
        BUILTIN_TOOLS[name] = BuiltinTool(name, description, schema, function)
        return function

    return register


class BuiltinServer:
    def __init__(self, server) -> None:
        self.server = server

    async def list_tools(self) -> list[ToolDef]:
        return [ToolDef(t.name, t.description, t.input_schema) for t in BUILTIN_TOOLS.values()]

    async def call_tool(self, name: str, arguments: dict[str, Any], ctx: ToolContext,
                        timeout: float) -> ToolResult:
        tool = BUILTIN_TOOLS.get(name)
        if tool is None:
            return ToolResult(f"Unknown tool '{name}'.", is_error=True, error_code="unknown_tool")
        try:
            result = await asyncio.wait_for(tool.function(arguments, ctx, self.server), timeout)
        except ToolError as error:
            return ToolResult(error.message, is_error=True, error_code=error.code)
        return result if isinstance(result, ToolResult) else ToolResult(str(result))


def server_options(server, section: str) -> dict[str, Any]:
    """One section of the built-in server row's options (e.g. "exec"), {} when absent or malformed."""
    options = getattr(server, "options", None) or {}
    value = options.get(section) if isinstance(options, dict) else None
    return value if isinstance(value, dict) else {}


import tools.builtin  # noqa: E402,F401 - registers the tools (they import builtin_tool from here)
