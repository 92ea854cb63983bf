"""Which tools a request runs on the platform, and the state of its tool loop.

`plan` decides: a persona with PersonaTools.execute on offers its model the
tools this key may use (tools/registry.py); a Responses request may name tool
servers registered here with `tools: [{"type": "mcp", ...}]`. The loop itself
runs in gateway/tool_loop.py; the types here are what faces render.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from asgiref.sync import sync_to_async

from gateway.call import Call, Route
from gateway.config import Snapshot, config_cache
from gateway.errors import InvalidRequest
from providers.types import ChatRequest, Tool, Usage
from tools import registry
from tools.models import PersonaTools, ToolServer
from tools.types import ToolSpec


@dataclass(frozen=True, slots=True)
class Caps:
    max_steps: int = 8
    max_tool_seconds: float = 120.0
    max_cost_usd: Decimal | None = None

    @classmethod
    def of(cls, settings: PersonaTools | None) -> Caps:
        if settings is None:  # a Responses `mcp` request to a persona without tool settings: the defaults
            return cls()
        return cls(settings.max_steps, settings.max_tool_seconds, settings.max_cost_usd)


@dataclass(frozen=True, slots=True)
class McpServerAsk:
    """A Responses API `{"type": "mcp", ...}` tool: a registered tool server, by name."""

    server_label: str
    server_url: str | None = None
    allowed_tools: tuple[str, ...] | None = None  # unqualified names; None: all the key may use


@dataclass(slots=True)
class ToolRun:
    """One tool call the loop ran: what the stream shows and the Responses output lists."""

    step: int  # the model call (1-based) that asked for it
    call_id: str
    name: str  # qualified: <server>__<tool>
    arguments: str
    run_id: str
    status: str = "running"  # then ToolCallLog's: ok, error, timeout, refused
    error_code: str = ""
    output: str = ""
    duration_ms: int = 0

    @property
    def server(self) -> str:
        return self.name.partition("__")[0]

    @property
    def tool(self) -> str:
        return self.name.partition("__")[2] or self.name


@dataclass(slots=True)
class ToolProgress:
    """A stream item beside the StreamEvents: a tool call started or finished.
    Each face renders it in its own unobtrusive way (api/tool_events.py)."""

    type: Literal["tool_started", "tool_finished"]
    run: ToolRun


@dataclass(slots=True)
class ToolLoop:
    call: Call  # the request's own Call: the first model call
    route: Route
    tools: list[ToolSpec]
    caps: Caps
    listed: list[tuple[str, list[ToolSpec]]] = field(default_factory=list)  # Responses `mcp` servers
    steps: list[Call] = field(default_factory=list)
    tool_seconds: float = 0.0
    usage: Usage = field(default_factory=Usage)
    cost: Decimal = Decimal(0)
    # What the answer is made of, in order: text (str) and the tool calls run (ToolRun).
    transcript: list[str | ToolRun] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.call.run_id

    def tool_named(self, name: str) -> bool:
        return any(s.qualified_name == name for s in self.tools)

    def text(self) -> str:
        return "\n\n".join(part for part in self.transcript if isinstance(part, str) and part)


# -- plan: does this request run tools on the platform? ------------------------------------


_settings_cache: tuple[Snapshot | None, dict[str, Caps]] = (None, {})


async def _executing_personas() -> dict[str, Caps]:
    """Slug -> caps of the personas with execute on, read once per config snapshot
    (PersonaTools saves move the config generation: gateway/config.py)."""
    global _settings_cache
    snapshot = await config_cache.snapshot()
    cached_for, found = _settings_cache
    if cached_for is not snapshot:
        found = await sync_to_async(_load_executing, thread_sensitive=False)()
        _settings_cache = (snapshot, found)
    return found


def _load_executing() -> dict[str, Caps]:
    return {s.persona.slug: Caps.of(s) for s in PersonaTools.objects.select_related("persona").filter(execute=True)}


async def plan(call: Call, route: Route, request: ChatRequest,
               servers: list[McpServerAsk] | None = None) -> ToolLoop | None:
    """The loop for this request, its tools added to `request`; None when it runs no tools
    here (the persona does not execute tools, the key may use none of them, no `mcp` tools)."""
    slug = route.persona.slug if route.persona is not None else None
    executing = await _executing_personas()
    tools: list[ToolSpec] = []
    if slug in executing:
        tools = await registry.available_tools(call.key, slug)
    listed = [(ask.server_label, await _server_tools(call, ask)) for ask in servers or ()]
    for _, specs in listed:
        tools += [s for s in specs if s not in tools]
    if not tools:
        return None
    if request.tools:
        raise InvalidRequest(
            f"'{route.label}' runs its tools on the platform (server-side tool execution), so this request "
            "cannot also send function tools of its own; leave `tools` out, or use a persona without it.",
            code="client_tools_not_supported", param="tools")
    request.tools = [Tool(s.qualified_name, s.description, s.input_schema) for s in tools]
    # begin worked out which steps can serve the request before it had tools: again, with them
    # (a step whose provider or model takes no tools is left out, or the request refused).
    call.serving, call.skipped = None, []
    if not call.run_id:  # the loop's calls are tied together by a run, the caller's or a new one
        call.run_id = f"run_{random.getrandbits(96):024x}"
    caps = executing.get(slug) or Caps.of(await sync_to_async(registry.persona_tool_settings)(slug) if slug else None)
    return ToolLoop(call=call, route=route, tools=tools, caps=caps, listed=listed)


async def _server_tools(call: Call, ask: McpServerAsk) -> list[ToolSpec]:
    """The tools of one registered server this key may use, narrowed by allowed_tools.
    A server the key may use no tool of reads as unknown; a server_url that is not the
    registered server's is refused: a request never makes the gateway connect anywhere."""
    server = await ToolServer.objects.filter(name=ask.server_label, enabled=True).afirst()
    usable = [s for s in await registry.available_tools(call.key) if s.server == ask.server_label]
    if server is None or not usable:
        raise InvalidRequest(f"tools: no tool server '{ask.server_label}' that this key may use; "
                             "GET /api/v1/tools lists them.", code="unknown_mcp_server", param="tools")
    if ask.server_url and ask.server_url.rstrip("/") != (server.url or "").rstrip("/"):
        raise InvalidRequest(f"tools: server_url is not the URL of the registered server '{ask.server_label}'; "
                             "this gateway only reaches servers its operators registered (leave server_url out).",
                             code="mcp_server_url_mismatch", param="tools")
    if ask.allowed_tools is not None:
        unknown = sorted(set(ask.allowed_tools) - {s.name for s in usable})
        if unknown:
            raise InvalidRequest(f"tools: allowed_tools names tools '{ask.server_label}' does not offer this key: "
                                 f"{', '.join(unknown)}.", code="unknown_tool", param="tools")
        usable = [s for s in usable if s.name in ask.allowed_tools]
    return usable


def progress_json(progress: ToolProgress) -> dict:
    """A tool progress event as the JSON object streams carry (api/tool_events.py)."""
    run = progress.run
    data = {"type": progress.type, "run_id": run.run_id, "step": run.step, "call_id": run.call_id,
            "name": run.name, "server": run.server, "tool": run.tool}
    if progress.type == "tool_started":
        return {**data, "arguments": run.arguments}
    return {**data, "status": run.status, "error_code": run.error_code, "duration_ms": run.duration_ms,
            "output_bytes": len(run.output.encode())}
