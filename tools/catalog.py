"""Refreshing a server's tool list, with tool-definition pinning.

A tool seen for the first time is recorded unapproved (built-in tools are
approved: they ship with the code). A listed definition that differs from the
approved one is kept aside in pending_* and the approved one stays what models
see, until an operator approves the change (`approve_pending`). This is the
defence against tool poisoning: a server cannot change what a tool tells the
model without a person looking.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.utils import timezone

from tools.models import Tool, ToolServer, definition_hash
from tools.servers import ToolDef, connection_for, failure_sentence

BUILTIN_SERVER = "builtin"


async def refresh_server(server: ToolServer) -> list[Tool]:
    """List the server's tools and record them (pinning changes); records the server's health."""
    try:
        listed = await connection_for(server).list_tools()
    except Exception as exc:  # noqa: BLE001 - any failure is the server's health, shown to operators
        server.healthy, server.last_checked_at = False, timezone.now()
        server.last_error = f"Listing tools {failure_sentence(exc)}"[:300]
        await server.asave(update_fields=["healthy", "last_checked_at", "last_error"])
        raise
    tools = [await _record(server, definition) for definition in listed]
    names = {d.name for d in listed}
    await Tool.objects.filter(server=server, missing_since__isnull=True).exclude(name__in=names).aupdate(
        missing_since=timezone.now())
    server.healthy, server.last_checked_at, server.last_error = True, timezone.now(), ""
    await server.asave(update_fields=["healthy", "last_checked_at", "last_error"])
    return tools


async def _record(server: ToolServer, definition: ToolDef) -> Tool:
    digest = definition_hash(definition.description, definition.input_schema)
    tool = await Tool.objects.filter(server=server, name=definition.name).afirst()
    if tool is None:
        return await Tool.objects.acreate(
            server=server, name=definition.name, description=definition.description,
            input_schema=definition.input_schema, definition_hash=digest, approved=server.kind == "builtin")
    tool.missing_since = None
    if digest == tool.definition_hash:
        tool.pending_description, tool.pending_schema, tool.pending_hash, tool.pending_since = "", None, "", None
    elif server.kind == "builtin":  # the code changed: it is its own approval
        tool.description, tool.input_schema, tool.definition_hash = (definition.description,
                                                                     definition.input_schema, digest)
    elif digest != tool.pending_hash:
        tool.pending_description, tool.pending_schema, tool.pending_hash = (definition.description,
                                                                            definition.input_schema, digest)
        tool.pending_since = timezone.now()
    await tool.asave()
    return tool


def approve_pending(tool: Tool) -> None:
    """An operator accepted the tool's new definition (or the new tool)."""
    if tool.pending_hash:
        tool.description, tool.input_schema, tool.definition_hash = (tool.pending_description,
                                                                     tool.pending_schema or {}, tool.pending_hash)
        tool.pending_description, tool.pending_schema, tool.pending_hash, tool.pending_since = "", None, "", None
    tool.approved = True
    tool.save()


async def builtin_server() -> ToolServer:
    """The built-in server's row, created and refreshed on first use."""
    server, created = await ToolServer.objects.aget_or_create(name=BUILTIN_SERVER, defaults={"kind": "builtin"})
    if created or not await Tool.objects.filter(server=server).aexists():
        await refresh_server(server)
    return server


@dataclass
class RefreshReport:
    """What one refresh changed, for the command's output and the dashboard's message."""

    server: str
    listed: int = 0
    new_awaiting: list[str] = field(default_factory=list)
    changed_pending: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    error: str = ""

    def summary(self) -> str:
        if self.error:
            return f"{self.server}: could not list its tools: {self.error}"
        parts = [f"{self.listed} tool{'s' if self.listed != 1 else ''} listed"]
        if self.new_awaiting:
            parts.append(f"new, awaiting approval: {', '.join(self.new_awaiting)}")
        if self.changed_pending:
            parts.append(f"changed definition pending approval: {', '.join(self.changed_pending)}")
        if self.gone:
            parts.append(f"no longer listed: {', '.join(self.gone)}")
        if len(parts) == 1:
            parts.append("nothing changed")
        return f"{self.server}: " + "; ".join(parts)


async def refresh_report(server: ToolServer) -> RefreshReport:
    """refresh_server, and what it changed (never raises: a failure is in `error`)."""
    before = {t.name: (t.pending_hash, t.missing_since) async for t in Tool.objects.filter(server=server)}
    report = RefreshReport(server.name)
    try:
        tools = await refresh_server(server)
    except Exception:  # noqa: BLE001 - recorded as the server's health by refresh_server
        report.error = server.last_error or "failed"
        return report
    report.listed = len(tools)
    for tool in tools:
        if tool.name not in before and not tool.approved:
            report.new_awaiting.append(tool.name)
        elif tool.name in before and tool.pending_hash and tool.pending_hash != before[tool.name][0]:
            report.changed_pending.append(tool.name)
    listed = {t.name for t in tools}
    report.gone = sorted(name for name, (_, missing) in before.items() if name not in listed and missing is None)
    return report
