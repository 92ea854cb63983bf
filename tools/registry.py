"""Which tools a key (and a persona) may use, and calling one.

The one door to tool execution: the server-side loop (gateway), /mcp and the
discovery API all come through `available_tools` and `call_tool`, so permission,
schema validation, time caps, size caps, sanitised errors and the call log hold
everywhere. A tool the key may not use is reported exactly like one that does
not exist (`unknown_tool`).
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import time
from datetime import datetime
from typing import Any

import jsonschema
from asgiref.sync import sync_to_async
from django.utils import timezone

from accounts.snapshot import KeyInfo
from tools.models import PersonaTools, Tool, ToolCallLog, ToolGrant, ToolServer
from tools.ratelimit import ToolRateLimitStoreDown, tool_call_admit
from tools.servers import connection_for, failure_sentence
from tools.types import ToolContext, ToolResult, ToolSpec

log = logging.getLogger("tools.registry")


# -- permission ----------------------------------------------------------------------------


def patterns_allow(patterns: list[str] | None, qualified_name: str) -> bool:
    return any(fnmatch.fnmatchcase(qualified_name, pattern) for pattern in patterns or ())


def grants_of(key: KeyInfo) -> tuple[list[str] | None, list[str] | None]:
    """(the team's patterns, the key's own patterns); None where there is no grant."""
    team = ToolGrant.objects.filter(team_id=key.team_id).values_list("patterns", flat=True).first()
    own = ToolGrant.objects.filter(api_key_id=key.id).values_list("patterns", flat=True).first()
    return team, own


def key_may_use(team_patterns: list[str] | None, key_patterns: list[str] | None, qualified_name: str) -> bool:
    if not patterns_allow(team_patterns, qualified_name):
        return False
    return key_patterns is None or patterns_allow(key_patterns, qualified_name)


def _spec(tool: Tool) -> ToolSpec:
    return ToolSpec(server=tool.server.name, name=tool.name, description=tool.description,
                    input_schema=tool.input_schema or {"type": "object"}, tool_id=tool.id,
                    rate_limit_per_minute=tool.rate_limit_per_minute)


def usable_tools(key: KeyInfo, persona: str | None = None) -> list[ToolSpec]:
    """The approved, enabled tools of enabled servers that this key may use; with
    `persona`, only those the persona offers (none when it has no tool settings)."""
    tools = Tool.objects.select_related("server").filter(
        approved=True, enabled=True, missing_since__isnull=True, server__enabled=True)
    if persona is not None:
        tools = tools.filter(personas__persona__slug=persona)
    team_patterns, key_patterns = grants_of(key)
    return [_spec(t) for t in tools if key_may_use(team_patterns, key_patterns, t.qualified_name)]


# Off the event loop in a pool thread: every chat request to a persona that runs tools reads this.
available_tools = sync_to_async(usable_tools, thread_sensitive=False)


def persona_tool_settings(persona: str) -> PersonaTools | None:
    return PersonaTools.objects.filter(persona__slug=persona).first()


# -- calling -----------------------------------------------------------------------------


def arguments_parsed(arguments: str | dict[str, Any] | None) -> dict[str, Any]:
    """A model's arguments (JSON text) as an object; raises ValueError with a reason."""
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError as exc:
        raise ValueError(f"arguments are not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(value, dict):
        raise ValueError("arguments must be a JSON object")
    return value


def _schema_refusal(spec: ToolSpec, arguments: dict[str, Any]) -> str | None:
    try:
        jsonschema.validate(arguments, spec.input_schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        return f"arguments do not match the tool's schema at {where}: {exc.message}"[:300]
    except jsonschema.SchemaError:
        return None  # the server's schema is broken; let the server judge its own arguments
    return None


def _capped(result: ToolResult, limit: int) -> ToolResult:
    data = result.content.encode()
    if len(data) <= limit:
        return result
    result.content = data[:limit].decode(errors="ignore") + f"\n[cut: the result was {len(data):,} bytes, " \
                                                             f"the limit is {limit:,}]"
    result.meta["truncated"] = True
    return result


async def call_tool(qualified_name: str, arguments: str | dict[str, Any] | None, ctx: ToolContext,
                    *, allowed: list[ToolSpec] | None = None) -> ToolResult:
    """Run one tool call for `ctx.key` and log it. Never raises for anything the
    model or the tool server does: every failure is a ToolResult with is_error.
    `allowed`: the tools already worked out for this caller (the loop passes the
    persona's list); else the key's usable tools."""
    started = time.monotonic()
    began_at = timezone.now()  # the log row's time: when the call began (a turn's calls run at once)
    if allowed is None:
        allowed = await available_tools(ctx.key)
    spec = next((s for s in allowed if s.qualified_name == qualified_name), None)
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    if spec is None:
        result = ToolResult(f"There is no tool named '{qualified_name}'.", is_error=True, error_code="unknown_tool")
        return await _logged(ctx, qualified_name, result, started, raw, status="refused", began_at=began_at)
    try:
        parsed = arguments_parsed(arguments)
        refusal = _schema_refusal(spec, parsed)
    except ValueError as exc:
        refusal = str(exc)
    if refusal:
        result = ToolResult(f"Refused: {refusal}.", is_error=True, error_code="invalid_arguments")
        return await _logged(ctx, qualified_name, result, started, raw, status="refused", began_at=began_at)
    limited = await _rate_limited(spec, ctx)
    if limited:
        return await _logged(ctx, qualified_name, limited, started, raw, status="refused", began_at=began_at)
    server = await ToolServer.objects.aget(name=spec.server)
    result, status = await _run(server, spec, parsed, ctx)
    return await _logged(ctx, qualified_name, _capped(result, server.max_result_bytes), started, raw,
                         status=status, began_at=began_at)


async def _rate_limited(spec: ToolSpec, ctx: ToolContext) -> ToolResult | None:
    """The refusal when the tool's per-team limit is reached (it is checked before the server is called)."""
    if spec.rate_limit_per_minute is None:
        return None
    try:
        admitted, reset = await tool_call_admit(tool_id=spec.tool_id, team_id=ctx.key.team_id,
                                                limit=spec.rate_limit_per_minute)
    except ToolRateLimitStoreDown:
        return ToolResult(f"The tool '{spec.qualified_name}' has a rate limit that cannot be checked right now; "
                          "try again shortly.", is_error=True, error_code="tool_rate_limited")
    if admitted:
        return None
    return ToolResult(f"The tool '{spec.qualified_name}' may be called {spec.rate_limit_per_minute} times a minute "
                      f"by your team; try again in {reset} s.", is_error=True, error_code="tool_rate_limited",
                      meta={"retry_after": reset})


async def _run(server: ToolServer, spec: ToolSpec, arguments: dict[str, Any],
               ctx: ToolContext) -> tuple[ToolResult, str]:
    timeout = server.timeout_seconds if ctx.time_left is None else max(0.0, min(server.timeout_seconds,
                                                                                  ctx.time_left))
    try:
        result = await asyncio.wait_for(connection_for(server).call_tool(spec.name, arguments, ctx, timeout),
                                        timeout)
    except TimeoutError:
        return ToolResult(f"The tool '{spec.qualified_name}' did not answer within {timeout:g} s.",
                          is_error=True, error_code="tool_timeout"), "timeout"
    except Exception as exc:  # a tool server's failure is the model's to read, sanitised; never a 500
        log.warning("tool %s failed", spec.qualified_name, exc_info=True)
        await _health_record(server, healthy=False, error=failure_sentence(exc))
        return ToolResult(f"The tool '{spec.qualified_name}' failed; its server is unavailable or returned an "
                          "error.", is_error=True, error_code="tool_unavailable"), "error"
    await _health_record(server, healthy=True)
    return result, ("error" if result.is_error else "ok")


async def _health_record(server: ToolServer, *, healthy: bool, error: str = "") -> None:
    """A call's outcome is the server's health too; written only when it changes (not on every call)."""
    if server.healthy is healthy and (healthy or server.last_error == error):
        return
    server.healthy, server.last_checked_at, server.last_error = healthy, timezone.now(), error[:300]
    await ToolServer.objects.filter(pk=server.pk).aupdate(healthy=healthy, last_checked_at=server.last_checked_at,
                                                          last_error=server.last_error)


# Control characters (a NUL above all: PostgreSQL refuses it in text) that a model or an MCP
# client may put in a tool name or a server in an error message; the log keeps the rest.
_CONTROL = dict.fromkeys(range(32))


def _loggable(text: str, length: int) -> str:
    return text.translate(_CONTROL)[:length]


async def _logged(ctx: ToolContext, qualified_name: str, result: ToolResult, started: float, raw: str, *,
                  status: str, began_at: datetime) -> ToolResult:
    server, _, tool = _loggable(qualified_name, 200).partition("__")
    await ToolCallLog.objects.acreate(
        at=began_at, request_id=ctx.request_id, run_id=ctx.run_id, team_id=ctx.key.team_id, api_key_id=ctx.key.id,
        persona=ctx.persona, source=ctx.source, server=server[:40], tool=tool[:100], status=status,
        error_code=result.error_code, error_message=_loggable(result.content, 300) if result.is_error else "",
        duration_ms=int((time.monotonic() - started) * 1000), bytes_in=len(raw.encode()),
        bytes_out=len(result.content.encode()),
    )
    return result
