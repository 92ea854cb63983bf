"""Dashboard pages for tools: MCP servers (health, settings with write-only
secrets, refresh), their tools (approval of new tools and changed definitions,
enable/disable, rate limits), allow-lists, and each persona's tools."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.audit import snapshot
from accounts.roles import (
    admin_required,
    async_operator_required,
    costs_required,
    operator_required,
    visible_team_ids,
)
from dashboard.rendering import render_page
from dashboard.tool_forms import PersonaToolsForm, ToolGrantForm, ToolServerForm, ToolSettingsForm
from personas.models import Persona
from tools import services
from tools.catalog import refresh_report
from tools.models import PersonaTools, Tool, ToolCallLog, ToolGrant, ToolServer
from tools.selectors import CALL_FILTERS, tool_calls_page
from tools.server_config import secret_names


@operator_required
@require_GET
def server_list(request: HttpRequest) -> HttpResponse:
    servers = ToolServer.objects.annotate(
        tool_count=Count("tools", filter=Q(tools__missing_since__isnull=True)),
        awaiting=Count("tools", filter=Q(tools__approved=False, tools__missing_since__isnull=True)),
        pending=Count("tools", filter=~Q(tools__pending_hash="") & Q(tools__missing_since__isnull=True)),
    )
    personas = Persona.objects.order_by("slug").prefetch_related("tool_settings__tools")
    return render_page(request, "tools/list.html", {"servers": servers, "personas": personas})


@admin_required  # a server decides what runs on the gateway host, or where tool calls go
@require_http_methods(["GET", "POST"])
def server_create(request: HttpRequest) -> HttpResponse:
    form = ToolServerForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        server = services.tool_server_save(actor=request.user, server=form.save(commit=False), before=None,
                                           secrets=form.cleaned_data["secrets"])
        messages.success(request, f"Tool server '{server.name}' registered. Refresh it to list its tools, "
                                  "then approve the ones models may use.")
        return redirect("tools:server", name=server.name)
    return render_page(request, "tools/server.html", {"form": form}, status=400 if form.errors else 200)


@operator_required
@require_http_methods(["GET", "POST"])
def server_edit(request: HttpRequest, name: str) -> HttpResponse:
    server = get_object_or_404(ToolServer, name=name)
    before = snapshot(server, services.SERVER_FIELDS)
    form = ToolServerForm(request.POST or None, instance=server, user=request.user)
    if server.kind == "builtin":
        form = None  # the built-in server has nothing to configure here
    elif request.method == "POST" and form.is_valid():
        services.tool_server_save(actor=request.user, server=form.save(commit=False), before=before,
                                  secrets=form.cleaned_data["secrets"],
                                  clear_secrets=form.cleaned_data["clear_secrets"])
        messages.success(request, f"Tool server '{server.name}' saved.")
        return redirect("tools:server", name=server.name)
    server.refresh_from_db()  # an invalid form must not show half-applied values
    tools = list(server.tools.all())
    context = {"form": form, "server": server, "secret_names": secret_names(server),
               "rows": [(t, json.dumps(t.input_schema, indent=2, sort_keys=True),
                         json.dumps(t.pending_schema, indent=2, sort_keys=True) if t.pending_hash else "")
                        for t in tools]}
    return render_page(request, "tools/server.html", context, status=400 if form and form.errors else 200)


@require_POST
@async_operator_required
async def server_refresh(request: HttpRequest, name: str) -> HttpResponse:
    """Ask the server which tools it has now; new tools and changed definitions wait for approval."""
    server = await ToolServer.objects.filter(name=name).afirst()
    if server is None:
        return HttpResponse("No such tool server.", status=404)
    report = await refresh_report(server)
    await sync_to_async(services.tool_server_refreshed)(actor=request.user, server=server, report=report)
    await sync_to_async(messages.add_message)(request, messages.ERROR if report.error else messages.SUCCESS,
                                              f"Refreshed {report.summary()}.")
    return redirect("tools:server", name=name)


def _tool(name: str, tool_id: int) -> Tool:
    return get_object_or_404(Tool.objects.select_related("server"), pk=tool_id, server__name=name)


@operator_required
@require_POST
def tool_approve(request: HttpRequest, name: str, tool_id: int) -> HttpResponse:
    tool = services.tool_approve(actor=request.user, tool=_tool(name, tool_id))
    messages.success(request, f"Approved {tool.qualified_name}: models now see its definition.")
    return redirect("tools:server", name=name)


@operator_required
@require_POST
def tool_settings(request: HttpRequest, name: str, tool_id: int) -> HttpResponse:
    tool = _tool(name, tool_id)
    form = ToolSettingsForm(request.POST)
    if form.is_valid():
        services.tool_settings_save(actor=request.user, tool=tool, enabled=form.cleaned_data["enabled"],
                                    rate_limit_per_minute=form.cleaned_data["rate_limit_per_minute"])
        messages.success(request, f"Saved {tool.qualified_name}.")
    else:
        messages.error(request, f"{tool.qualified_name} was not saved: "
                       + "; ".join(e for errors in form.errors.values() for e in errors))
    return redirect("tools:server", name=name)


@operator_required
@require_http_methods(["GET", "POST"])
def grants(request: HttpRequest) -> HttpResponse:
    form = ToolGrantForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        services.tool_grant_save(actor=request.user, team=data["team"], api_key=data["api_key"],
                                 patterns=data["patterns"])
        who = f"team {data['team'].name}" if data["team"] else f"key {data['api_key'].name}"
        messages.success(request, f"Saved the tool allow-list of {who}.")
        return redirect("tools:grants")
    rows = ToolGrant.objects.select_related("team", "api_key__team").order_by("team__name", "api_key__name")
    return render_page(request, "tools/grants.html", {"form": form, "grants": rows},
                       status=400 if form.errors else 200)


@operator_required
@require_http_methods(["GET", "POST"])
def persona_tools(request: HttpRequest, slug: str) -> HttpResponse:
    persona = get_object_or_404(Persona, slug=slug)
    settings = PersonaTools.objects.filter(persona=persona).first() or PersonaTools(persona=persona)
    form = PersonaToolsForm(request.POST or None, instance=settings)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        services.persona_tools_save(actor=request.user, persona=persona, tools=list(data["tools"]),
                                    execute=data["execute"], max_steps=data["max_steps"],
                                    max_tool_seconds=data["max_tool_seconds"], max_cost_usd=data["max_cost_usd"])
        messages.success(request, f"Saved the tools of persona '{persona.slug}'.")
        return redirect("tools:list")
    return render_page(request, "tools/persona.html", {"form": form, "persona": persona},
                       status=400 if form.errors else 200)


@costs_required
@require_GET
def tool_calls(request: HttpRequest) -> HttpResponse:
    """The tool-call log: every tool call of the teams this user sees, newest first."""
    filters = {name: request.GET.get(name, "").strip()[:100] for name in CALL_FILTERS}
    before = request.GET.get("before", "")
    rows, next_before = tool_calls_page(team_ids=visible_team_ids(request.user), filters=filters,
                                        before=int(before) if before.isdigit() else None)
    return render_page(request, "tools/calls.html", {
        "rows": rows, "next_before": next_before, "filters": filters, "statuses": ToolCallLog.STATUSES,
        "sources": ToolCallLog.SOURCES, "filter_query": urlencode({k: v for k, v in filters.items() if v})})
