"""Tools for personas (issue 19): the servers that provide them, the tools they
list (with pinned definitions), who may use which, and the log of every call.

Layer: above budgets, below gateway. The gateway's server-side loop and the
api's /mcp and /api/v1/tools call into tools/registry.py; nothing here imports
the gateway (ask_persona gets its way back in through ToolContext.ask).
"""

from __future__ import annotations

import hashlib
import json

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from accounts.models import ApiKey, Team
from personas.models import Persona

# Qualified tool names are `<server>__<tool>`: the server name may not contain the separator.
SEPARATOR = "__"
# Paths of the dashboard's tool pages that sit where a server's name goes (/dashboard/tools/<name>/).
RESERVED_SERVER_NAMES = frozenset({"new", "grants", "calls", "personas"})


def definition_hash(description: str, input_schema: dict) -> str:
    """What pinning compares: the tool's description and schema, canonically serialised."""
    text = json.dumps({"description": description or "", "input_schema": input_schema or {}}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class ToolServer(models.Model):
    KINDS = [
        ("builtin", "Built-in (in-process)"),
        ("http", "MCP over streamable HTTP"),
        ("stdio", "MCP over stdio (a local command)"),
    ]

    name = models.SlugField(max_length=40, unique=True,
                            help_text="The namespace of its tools: a tool is called <server>__<tool>.")
    kind = models.CharField(max_length=10, choices=KINDS)
    url = models.URLField(max_length=500, blank=True, help_text="Streamable HTTP endpoint (kind http).")
    # argv of the command (kind stdio), never run through a shell.
    command = models.JSONField(default=list, blank=True)
    # JSON object of environment variables (stdio) or HTTP headers (http), encrypted
    # with providers.crypto like provider credentials; never shown back.
    secrets_encrypted = models.TextField(blank=True)
    # Kind-specific settings, e.g. the built-in server's exec allow-list.
    options = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    timeout_seconds = models.FloatField(default=30.0, help_text="Longest one tool call may take.")
    max_result_bytes = models.PositiveIntegerField(default=100_000, help_text="Longer results are cut.")
    # Health, from the last refresh or call.
    healthy = models.BooleanField(null=True, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from tools.server_config import server_url_validate

        if SEPARATOR in self.name:
            raise ValidationError({"name": f"A server name may not contain '{SEPARATOR}'."})
        if self.name in RESERVED_SERVER_NAMES:
            raise ValidationError({"name": f"'{self.name}' names a dashboard page; choose another server name."})
        if self.kind == "http":
            try:
                server_url_validate(self.url)
            except ValidationError as error:
                raise ValidationError({"url": error.messages}) from None
        if self.kind == "stdio" and not (isinstance(self.command, list) and self.command
                                         and all(isinstance(a, str) and a for a in self.command)):
            raise ValidationError({"command": "A stdio server needs its command: a list of arguments, "
                                              'e.g. ["npx", "-y", "@modelcontextprotocol/server-github"].'})


class Tool(models.Model):
    """A tool a server lists. Its approved definition is what models see; a changed
    definition waits in pending_* until an operator approves it (tool pinning)."""

    server = models.ForeignKey(ToolServer, on_delete=models.CASCADE, related_name="tools")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    input_schema = models.JSONField(default=dict, blank=True)
    definition_hash = models.CharField(max_length=64, blank=True)
    # Set when the server lists a definition other than the approved one.
    pending_description = models.TextField(blank=True)
    pending_schema = models.JSONField(null=True, blank=True)
    pending_hash = models.CharField(max_length=64, blank=True)
    pending_since = models.DateTimeField(null=True, blank=True)
    # A new tool needs approval too before any model sees it, unless its server is built in.
    approved = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True)
    rate_limit_per_minute = models.PositiveIntegerField(null=True, blank=True,
                                                        help_text="Calls per minute per team; empty: no limit.")
    # Set when the server stopped listing it (kept for the log and for pinning).
    missing_since = models.DateTimeField(null=True, blank=True)
    first_seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["server__name", "name"]
        constraints = [models.UniqueConstraint(fields=["server", "name"], name="tool_unique_per_server")]

    def __str__(self) -> str:
        return self.qualified_name

    @property
    def qualified_name(self) -> str:
        return f"{self.server.name}{SEPARATOR}{self.name}"


class PersonaTools(models.Model):
    """Which tools a persona offers its model, and whether the platform runs them."""

    persona = models.OneToOneField(Persona, on_delete=models.CASCADE, related_name="tool_settings")
    tools = models.ManyToManyField(Tool, blank=True, related_name="personas")
    # Off: tool calls go back to the caller, as before. On: the platform executes them
    # and feeds the results back until a final answer.
    execute = models.BooleanField(default=False)
    max_steps = models.PositiveSmallIntegerField(default=8, help_text="Model calls in one server-side loop.")
    max_tool_seconds = models.FloatField(default=120.0, help_text="Total tool time in one loop.")
    max_cost_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True,
                                       help_text="What one loop's model calls may cost; empty: budgets decide.")

    def __str__(self) -> str:
        return f"tools of {self.persona.slug}"


class ToolGrant(models.Model):
    """An allow-list of tools for a team or for one key. A key may use a tool when
    its team's list allows it and, if the key has a list of its own, that list does
    too. No list for the team: no tools (safe by default). Patterns are qualified
    names with `*` wildcards: `builtin__*`, `github__search_issues`."""

    team = models.OneToOneField(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="tool_grant")
    api_key = models.OneToOneField(ApiKey, null=True, blank=True, on_delete=models.CASCADE,
                                   related_name="tool_grant")
    patterns = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(team__isnull=False, api_key__isnull=True)
                           | models.Q(team__isnull=True, api_key__isnull=False)),
                name="tool_grant_team_xor_key",
            )
        ]


class ToolCallLog(models.Model):
    """One row per tool call, wherever it came from (the server-side loop, /mcp)."""

    STATUSES = [
        ("ok", "Answered"),
        ("error", "Tool error"),
        ("timeout", "Timed out"),
        ("refused", "Refused (permission, schema, rate limit, cap)"),
    ]
    SOURCES = [("loop", "Server-side loop"), ("mcp", "/mcp"), ("api", "API")]

    at = models.DateTimeField(default=timezone.now, db_index=True)
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    run_id = models.CharField(max_length=100, blank=True, db_index=True)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    persona = models.CharField(max_length=50, blank=True)
    source = models.CharField(max_length=10, choices=SOURCES, default="loop")
    server = models.CharField(max_length=40)
    tool = models.CharField(max_length=100)
    status = models.CharField(max_length=10, choices=STATUSES)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.CharField(max_length=300, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    bytes_in = models.PositiveIntegerField(default=0)
    bytes_out = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-at"]


class ToolRateWindow(models.Model):
    """Calls of one tool by one team in one minute, when Redis is not configured: the
    database is what every gateway process shares (tools/ratelimit.py)."""

    tool = models.ForeignKey(Tool, on_delete=models.CASCADE, related_name="+")
    team_id = models.PositiveBigIntegerField()
    window = models.PositiveBigIntegerField(help_text="Minutes since the epoch.")
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tool", "team_id", "window"], name="tool_rate_window_unique")]


class Document(models.Model):
    """A document an operator uploaded for the built-in `search` tool. Full-text
    search: PostgreSQL's own (tools/search.py); on SQLite an FTS5 index kept in
    step by triggers (migration 0002)."""

    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="documents",
                             help_text="Empty: every team may search it.")
    title = models.CharField(max_length=200)
    content = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title


class Note(models.Model):
    """The built-in scratchpad (note_put / note_get): values the agents of one run
    share, kept per team and run, so one team never reads another's notes."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+")
    run_id = models.CharField(max_length=100)
    name = models.CharField(max_length=100)
    value = models.TextField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["team", "run_id", "name"], name="note_unique_per_run")]
