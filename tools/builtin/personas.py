"""list_personas and ask_persona: a persona finds and consults its colleagues."""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import sync_to_async

from tools.servers.builtin import builtin_tool
from tools.types import ToolContext, ToolError, ToolResult

MAX_QUESTION = 20_000


def callable_personas() -> list[dict[str, str]]:
    """The personas any key may call: enabled, with a route (a persona without one refuses every request)."""
    from personas.models import Persona

    rows = Persona.objects.filter(enabled=True, steps__isnull=False).distinct().order_by("slug")
    return [{"slug": p.slug, "name": p.name or p.slug, "description": p.description} for p in rows]


@builtin_tool(
    "list_personas",
    "The personas this caller may consult with ask_persona: slug, name and what each one is for.",
)
async def list_personas(arguments: dict[str, Any], ctx: ToolContext, server) -> ToolResult:
    personas = await sync_to_async(callable_personas)()
    return ToolResult(json.dumps({"personas": personas}), structured={"personas": personas})


@builtin_tool(
    "ask_persona",
    "Ask another persona (e.g. the architect or the reviewer) one question and get its answer. The question "
    "must stand on its own: the persona sees nothing else of this conversation. It is a model call of its own, "
    "billed to the caller and the current run.",
    {"persona": {"type": "string", "minLength": 1, "maxLength": 50, "description": "The persona's slug."},
     "question": {"type": "string", "minLength": 1, "maxLength": MAX_QUESTION}},
    required=("persona", "question"),
)
async def ask_persona(arguments: dict[str, Any], ctx: ToolContext, server) -> ToolResult:
    if ctx.ask is None:
        raise ToolError("ask_persona is not available here: personas are already consulting each other too "
                        "deeply (a persona asked by a persona asked by ...). Answer with what you have.",
                        code="ask_too_deep")
    slug = arguments["persona"]
    known = [p["slug"] for p in await sync_to_async(callable_personas)()]
    if slug not in known:
        raise ToolError(f"There is no persona '{slug}' to ask. You may ask: {', '.join(known) or 'nobody'}.",
                        code="unknown_persona")
    answer = await ctx.ask(slug, arguments["question"])
    return ToolResult(answer, structured={"persona": slug, "answer": answer})
