"""Operators' changes to tools, each with its audit entry in the same transaction
(accounts/audit.py). Secrets never reach an entry: only which names are set."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction

from accounts.audit import audit_record, changed, snapshot
from accounts.models import Team
from tools.catalog import RefreshReport, approve_pending
from tools.models import Document, PersonaTools, Tool, ToolGrant, ToolServer
from tools.server_config import secret_names, secrets_encrypt

SERVER_FIELDS = ["name", "kind", "url", "command", "options", "enabled", "timeout_seconds", "max_result_bytes"]
PERSONA_TOOL_FIELDS = ["execute", "max_steps", "max_tool_seconds", "max_cost_usd"]

# What one document may hold: a long runbook is ~50 kB. PostgreSQL's tsvector of one
# document must stay under 1 MB, and a text of unique words can make one about 3 times
# its size: one document past that would fail every search of its team.
MAX_DOCUMENT_BYTES = 300_000


def _secrets_state(server: ToolServer) -> str:
    names = secret_names(server) if server.secrets_encrypted else []
    return f"set: {', '.join(names)}" if names else "not set"


@transaction.atomic
def tool_server_save(*, actor, server: ToolServer, before: dict | None, secrets: dict[str, str] | None = None,
                     clear_secrets: bool = False) -> ToolServer:
    """Create or change a server. `secrets`: replace the stored ones (None keeps them)."""
    if before is not None:
        before["secrets"] = _secrets_state(ToolServer.objects.get(pk=server.pk))
    if secrets:
        server.secrets_encrypted = secrets_encrypt(secrets)
    elif clear_secrets:
        server.secrets_encrypted = ""
    server.save()
    after = {**snapshot(server, SERVER_FIELDS), "secrets": _secrets_state(server)}
    fields = changed(before, after) if before is not None else []
    summary = (f"Registered tool server '{server.name}' ({server.kind})" if before is None
               else f"Changed {', '.join(fields) or 'nothing'} of tool server '{server.name}'")
    audit_record(actor=actor, action="tool_server.create" if before is None else "tool_server.update",
                 target=server, summary=summary, before=before, after=after)
    return server


def tool_server_refreshed(*, actor, server: ToolServer, report: RefreshReport) -> None:
    """The entry for a refresh (its writes are refresh_server's own)."""
    audit_record(actor=actor, action="tool_server.refresh", target=server, summary=report.summary(),
                 after={"new_awaiting": report.new_awaiting, "changed_pending": report.changed_pending,
                        "gone": report.gone, "error": report.error})


def _tool_picture(tool: Tool) -> dict:
    return {"description": tool.description, "input_schema": tool.input_schema, "approved": tool.approved,
            "enabled": tool.enabled, "rate_limit_per_minute": tool.rate_limit_per_minute}


@transaction.atomic
def tool_approve(*, actor, tool: Tool) -> Tool:
    tool = Tool.objects.select_for_update().select_related("server").get(pk=tool.pk)
    before = _tool_picture(tool)
    what = "changed definition" if tool.pending_hash else "tool"
    approve_pending(tool)
    audit_record(actor=actor, action="tool.approve", target=tool, label=tool.qualified_name,
                 summary=f"Approved the {what} {tool.qualified_name}", before=before, after=_tool_picture(tool))
    return tool


@transaction.atomic
def tool_settings_save(*, actor, tool: Tool, enabled: bool, rate_limit_per_minute: int | None) -> Tool:
    before = _tool_picture(tool)
    tool.enabled, tool.rate_limit_per_minute = enabled, rate_limit_per_minute
    tool.save(update_fields=["enabled", "rate_limit_per_minute"])
    after = _tool_picture(tool)
    audit_record(actor=actor, action="tool.update", target=tool, label=tool.qualified_name,
                 summary=f"Changed {', '.join(changed(before, after)) or 'nothing'} of tool {tool.qualified_name}",
                 before=before, after=after)
    return tool


@transaction.atomic
def tool_grant_save(*, actor, team=None, api_key=None, patterns: list[str]) -> ToolGrant | None:
    """Set a team's (or a key's own) allow-list; an empty list removes it (a team then has no tools,
    a key goes back to its team's list)."""
    owner = {"team": team} if team is not None else {"api_key": api_key}
    label = f"team {team.name}" if team is not None else f"key {api_key.name} ({api_key.team.name})"
    grant = ToolGrant.objects.filter(**owner).first()
    before = {"patterns": grant.patterns} if grant else None
    if not patterns:
        if grant:
            grant.delete()
        audit_record(actor=actor, action="tool_grant.delete", target_type="toolgrant", label=label,
                     summary=f"Removed the tool allow-list of {label}", before=before)
        return None
    grant = grant or ToolGrant(**owner)
    grant.patterns = patterns
    grant.save()
    audit_record(actor=actor, action="tool_grant.update" if before else "tool_grant.create", target=grant,
                 label=label, summary=f"Tool allow-list of {label}: {', '.join(patterns)}", before=before,
                 after={"patterns": patterns})
    return grant


def _persona_picture(settings: PersonaTools | None) -> dict | None:
    if settings is None or settings.pk is None:
        return None
    picture = snapshot(settings, PERSONA_TOOL_FIELDS)
    picture["tools"] = sorted(t.qualified_name for t in settings.tools.select_related("server"))
    return picture


@transaction.atomic
def persona_tools_save(*, actor, persona, tools: list[Tool], execute: bool, max_steps: int,
                       max_tool_seconds: float, max_cost_usd: Decimal | None) -> PersonaTools:
    settings = PersonaTools.objects.filter(persona=persona).first()
    before = _persona_picture(settings)
    settings = settings or PersonaTools(persona=persona)
    settings.execute, settings.max_steps, settings.max_tool_seconds, settings.max_cost_usd = (
        execute, max_steps, max_tool_seconds, max_cost_usd)
    settings.save()
    settings.tools.set(tools)
    after = _persona_picture(settings)
    summary = f"Changed {', '.join(changed(before, after)) or 'nothing'} of the tools of persona '{persona.slug}'"
    audit_record(actor=actor, action="persona_tools.update", target=persona, label=persona.slug,
                 summary=summary if before else f"Set the tools of persona '{persona.slug}'",
                 before=before, after=after)
    return settings


@transaction.atomic
def document_create(*, actor, team: Team | None, title: str, content: str) -> Document:
    document = Document.objects.create(team=team, title=title, content=content)
    audit_record(actor=actor, action="document.create", target=document,
                 summary=f"Uploaded document '{title}' ({len(content.encode()):,} bytes) for "
                         f"{f'team {team.name}' if team else 'every team'}",
                 after={"title": title, "team": team.name if team else None, "bytes": len(content.encode())})
    return document


@transaction.atomic
def document_delete(*, actor, document: Document) -> None:
    before = {"title": document.title, "team": document.team.name if document.team else None,
              "bytes": len(document.content.encode())}
    audit_record(actor=actor, action="document.delete", target=document,
                 summary=f"Deleted document '{document.title}'", before=before)
    document.delete()
