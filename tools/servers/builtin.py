"""The built-in tool server: tools that run in-process, safe by default.

Each tool is an async function registered with `@builtin_tool(schema, description)`;
it gets its validated arguments, the ToolContext and the server row (for options
such as the exec allow-list) and returns a ToolResult or a string.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import Count, Sum

from tools.servers import ToolDef
from tools.types import ToolContext, ToolResult

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
        result = await asyncio.wait_for(tool.function(arguments, ctx, self.server), timeout)
        return result if isinstance(result, ToolResult) else ToolResult(str(result))


# -- the tools ----------------------------------------------------------------------------


@builtin_tool("current_time", "The current date and time in UTC (ISO 8601).")
async def current_time(arguments: dict[str, Any], ctx: ToolContext, server) -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@builtin_tool(
    "run_cost",
    "What a workflow run has spent so far: model calls and their cost in USD. "
    "Without run_id, the current run.",
    {"run_id": {"type": "string", "description": "The run to report; default: the current one."}},
)
async def run_cost(arguments: dict[str, Any], ctx: ToolContext, server) -> ToolResult:
    run_id = arguments.get("run_id") or ctx.run_id
    if not run_id:
        return ToolResult("This call is not part of a run: pass run_id.", is_error=True,
                          error_code="invalid_arguments")
    totals = await sync_to_async(_run_totals)(run_id, ctx.key.team_id)
    return ToolResult(json.dumps(totals), structured=totals)


def _run_totals(run_id: str, team_id: int) -> dict[str, Any]:
    from budgets.models import Usage

    # Only the caller's team's rows: a run id of another team reads as empty.
    row = Usage.objects.filter(run_id=run_id, team_id=team_id).aggregate(
        calls=Count("id"), cost=Sum("cost_usd"), input_tokens=Sum("input_tokens"),
        output_tokens=Sum("output_tokens"))
    return {"run_id": run_id, "model_calls": row["calls"], "cost_usd": str(row["cost"] or Decimal(0)),
            "input_tokens": row["input_tokens"] or 0, "output_tokens": row["output_tokens"] or 0}
